package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// otlpReceiver is an OTLP/HTTP endpoint that keeps the spans it is sent.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var export coltracepb.ExportTraceServiceRequest
		if req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &export) != nil {
			t.Errorf("OTLP receiver: %s with a body that is not an export request", req.URL.Path)
			w.WriteHeader(400)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	t.Cleanup(r.Close)
	return r
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetStringValue()
		}
	}
	return ""
}

// TestTracesEndToEnd: with OTEL_EXPORTER_OTLP_ENDPOINT set, one signed webhook that
// arrives with a provider's traceparent yields its HTTP server span (in a trace of its
// own linked to the provider's, or, with INBOX_TRUST_TRACEPARENT, in the provider's),
// an ingest "send" span under it, and a "process" span linked to the send span
// carrying messaging.message.id = the event id; all exported over OTLP/HTTP. What a
// client sent is cut to 256 bytes in attributes.
func TestTracesEndToEnd(t *testing.T) {
	t.Parallel()
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust traceparent %v", trust), func(t *testing.T) { traceEndToEnd(t, trust) })
	}
}

func traceEndToEnd(t *testing.T, trust bool) {
	t.Parallel()
	receiver := newOTLPReceiver(t)
	dbURL := pgtest.NewDB(t)
	base, _, stop := startServeStoppable(t, map[string]string{
		"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.URL, "INBOX_TRUST_TRACEPARENT": strconv.FormatBool(trust),
		"INBOX_DELIVERY_ALLOW_PRIVATE": "true",
	})
	// A subscriber, so that the story goes on: ingest → process → deliver.
	consumer := deliverytest.New(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"subscriptions", "create", "--url", consumer.URL, "--types", "message.created", "--allow-private", "--database-url", dbURL},
		func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-t","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`
	req := providertest.Request(t, "generic", base, "", testSecret, "evt-t", []byte(body), time.Now())
	const providerTrace = "0af7651916cd43dd8448eb211c80319c"
	req.Header.Set("traceparent", "00-"+providerTrace+"-b7ad6b7169203331-01")
	req.Header.Set("User-Agent", strings.Repeat("u", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	var ack struct{ Events []ingest.Result }
	json.NewDecoder(resp.Body).Decode(&ack)
	resp.Body.Close()
	eventID := strconv.FormatInt(ack.Events[0].ID, 10)
	pgtest.Eventually(t, "the message delivered to the subscriber", 30*time.Second, func() (bool, error) {
		return len(consumer.Delivered()) == 1, nil
	})
	time.Sleep(200 * time.Millisecond) // the delivery's outcome recorded, its span ended
	if err := stop(); err != nil {     // the stop flushes the spans
		t.Fatal(err)
	}

	receiver.mu.Lock()
	defer receiver.mu.Unlock()
	byName := map[string][]*tracepb.Span{}
	for _, s := range receiver.spans {
		byName[s.Name] = append(byName[s.Name], s)
	}
	server, send := byName["POST /webhooks/generic"], byName["send inbound_events"]
	if len(server) != 1 || len(send) != 1 {
		t.Fatalf("spans %v, want one server span and one send span", byName)
	}
	inProviders := hex.EncodeToString(server[0].TraceId) == providerTrace
	var linkedToProvider bool
	for _, l := range server[0].Links {
		linkedToProvider = linkedToProvider || hex.EncodeToString(l.TraceId) == providerTrace
	}
	switch {
	case trust && !inProviders:
		t.Errorf("with INBOX_TRUST_TRACEPARENT the server span is in trace %x, want the provider's %s", server[0].TraceId, providerTrace)
	case !trust && (inProviders || !linkedToProvider):
		t.Errorf("server span in trace %x (linked to the provider's: %v), want a trace of its own linked to %s", server[0].TraceId, linkedToProvider, providerTrace)
	}
	for _, a := range server[0].Attributes {
		if v := a.GetValue().GetStringValue(); len(v) > 256 {
			t.Errorf("server span attribute %s holds %d bytes, want at most 256", a.Key, len(v))
		}
	}
	if !equalBytes(send[0].ParentSpanId, server[0].SpanId) || attr(send[0], "messaging.message.id") != eventID {
		t.Errorf("send span: parent %x (server %x), message id %q (event %s)", send[0].ParentSpanId, server[0].SpanId, attr(send[0], "messaging.message.id"), eventID)
	}
	var linked bool
	for _, p := range byName["process inbound_events"] {
		if attr(p, "messaging.message.id") != eventID {
			continue
		}
		for _, l := range p.Links {
			linked = linked || equalBytes(l.SpanId, send[0].SpanId)
		}
	}
	if !linked {
		t.Errorf("no process span with messaging.message.id %s links to the send span; spans: %v", eventID, byName)
	}
	deliver := byName["deliver changes"]
	if len(deliver) != 1 {
		t.Fatalf("%d deliver spans, want 1", len(deliver))
	}
	linked = false
	for _, l := range deliver[0].Links {
		linked = linked || equalBytes(l.SpanId, send[0].SpanId)
	}
	got := consumer.Delivered()[0]
	if !linked || attr(deliver[0], "messaging.message.id") != got.ID ||
		!strings.Contains(got.Traceparent, hex.EncodeToString(deliver[0].TraceId)) {
		t.Errorf("deliver span: linked to the send span %v, message id %q (change %s), its trace %x in the subscriber's traceparent %q",
			linked, attr(deliver[0], "messaging.message.id"), got.ID, deliver[0].TraceId, got.Traceparent)
	}
}

func equalBytes(a, b []byte) bool { return len(a) > 0 && string(a) == string(b) }
