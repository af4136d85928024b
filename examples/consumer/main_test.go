package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider/generic"
)

// TestConsumer: a delivery signed as inboxd signs it is applied once, however often
// it comes; a wrong signature is 401 and applies nothing.
func TestConsumer(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var applied []string
	h, err := newHandler(secret, func(c change) { applied = append(applied, c.ID) })
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"7931.1042","type":"message.created","occurred_at":"2026-12-03T10:00:00Z","conversation_id":12,"data":{"id":881}}`
	post := func(secret string) int {
		hdr, err := generic.Headers(secret, "7931.1042", time.Now(), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", "/inboxd", strings.NewReader(body))
		req.Header = hdr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for range 2 {
		if code := post(secret); code != http.StatusNoContent {
			t.Fatalf("signed delivery: %d", code)
		}
	}
	if code := post("whsec_" + strings.Repeat("A", 32)); code != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d, want 401", code)
	}
	if len(applied) != 1 || applied[0] != "7931.1042" {
		t.Errorf("applied %v, want the change once", applied)
	}
}
