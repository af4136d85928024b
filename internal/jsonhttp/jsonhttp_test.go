package jsonhttp

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	if err := Write(w, 201, map[string]string{"a": "<b>"}); err != nil {
		t.Fatal(err)
	}
	if w.Code != 201 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != `{"a":"\u003cb\u003e"}`+"\n" {
		t.Errorf("Write = %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body.String())
	}
}

// TestWriteUnencodable: a value JSON cannot hold is a 500 in the error shape, with
// the error returned, never the intended status with an empty body.
func TestWriteUnencodable(t *testing.T) {
	w := httptest.NewRecorder()
	err := Write(w, 200, map[string]time.Time{"sent_at": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	var body struct {
		Error struct{ Code, Message string }
	}
	if err == nil || w.Code != 500 || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error.Code != "internal" {
		t.Errorf("Write = %v, %d %q; want an error and a 500 with code internal", err, w.Code, w.Body.String())
	}
}
