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
		!strings.Contains(f["reason"].(string), "signed URL: "+s.URL+"/webhooks/twilio") {
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
