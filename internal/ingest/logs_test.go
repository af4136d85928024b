package ingest

import (
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"inboxd/internal/pgtest"
)

// TestRejectionLogs: a rejected webhook logs one info line with the provider, the
// status, the reason (for Twilio, the URL the signature was checked against) and the
// request id; a flood of them is cut to 20 lines a second, the rest counted.
func TestRejectionLogs(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	s := newTestServerLog(t, pgtest.NewDB(t), Config{}, 0, zap.New(core))
	form := url.Values{"MessageSid": {"SM1"}, "From": {"+15552223333"}, "To": {"+15550001111"}}
	status, _ := s.postRaw(t, "/webhooks/twilio", "application/x-www-form-urlencoded", form.Encode(), "X-Twilio-Signature", "bm90IGl0")
	if status != 401 {
		t.Fatalf("bad signature: %d", status)
	}
	lines := logs.FilterMessage("webhook rejected").All()
	if len(lines) != 1 {
		t.Fatalf("%d rejection lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["provider"] != "twilio" || f["status"] != int64(401) || f["request_id"] == "" ||
		!strings.Contains(f["detail"].(string), "signed URL: "+s.URL+"/webhooks/twilio") {
		t.Errorf("rejection line %v, want provider, status, request id and the URL the signature was checked for", f)
	}
	if lines[0].Level != zapcore.InfoLevel {
		t.Errorf("rejection logged at %s, want info", lines[0].Level)
	}
	for range 60 {
		s.postRaw(t, "/webhooks/twilio", "application/x-www-form-urlencoded", form.Encode(), "X-Twilio-Signature", "bm90IGl0")
	}
	n := logs.FilterMessage("webhook rejected").Len()
	dropped := testutil.ToFloat64(s.h.metrics.logDropped)
	if n > 40 || dropped == 0 || float64(n)+dropped != 61 {
		t.Errorf("61 rejections: %d lines and %v dropped, want at most 20 a second and the rest counted", n, dropped)
	}
}

// TestOverloadIsLoggedAsWarning: a 503 is a warning (the provider will retry, and
// an operator should look), where the client's own mistakes are info.
func TestOverloadIsLoggedAsWarning(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	s := newTestServerLog(t, pgtest.NewDB(t), Config{BodyMemory: 100}, 0, zap.New(core))
	if status, body := s.post(t, "evt_1", "application/json", sampleGeneric("m-1"), s.secret); status != 503 {
		t.Fatalf("a body larger than INBOX_BODY_MEMORY: %d %s, want 503", status, body)
	}
	lines := logs.FilterMessage("webhook rejected").All()
	if len(lines) != 1 || lines[0].Level != zapcore.WarnLevel {
		t.Errorf("rejection lines %v, want one at warn", lines)
	}
}

// TestRejectionsAreBounded: a refused request's answer does not echo what it was
// checked against (the URL, with a query the client chose), and neither the answer
// nor the log line grows with what the client sent.
func TestRejectionsAreBounded(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	s := newTestServerLog(t, pgtest.NewDB(t), Config{}, 0, zap.New(core))
	query := strings.Repeat("q", 20<<10)
	form := url.Values{"MessageSid": {"SM1"}, "From": {"+15552223333"}, "To": {"+15550001111"}}
	status, body := s.postRaw(t, "/webhooks/twilio?x="+query, "application/x-www-form-urlencoded", form.Encode(), "X-Twilio-Signature", "bm90IGl0")
	if status != 401 || strings.Contains(body, "qqqq") || strings.Contains(body, s.URL) {
		t.Errorf("answer %d %s: want 401 without the URL it was checked against", status, body)
	}
	for _, e := range logs.FilterMessage("webhook rejected").All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && len(s) > 600 {
				t.Errorf("log field %s holds %d bytes, want it bounded", k, len(s))
			}
		}
	}
}
