package ingest

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestSendSpan: a stored webhook is a "send inbound_events" span with the messaging
// attributes and the event id, its trace context is stored with the event (so that
// processing links back to it), and nothing from the payload is in it.
func TestSendSpan(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	s := newTestServer(t, pgtest.NewDB(t), Config{Tracing: tp})
	status, body := s.post(t, "evt_traced", "application/json", sampleGeneric("m-traced"), s.secret)
	if status != 200 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var ack struct{ Events []Result }
	json.Unmarshal([]byte(body), &ack)
	id := ack.Events[0].ID

	got := spans.GetSpans()
	if len(got) != 1 || got[0].Name != "send inbound_events" || got[0].SpanKind != trace.SpanKindProducer {
		t.Fatalf("spans %v, want one producer span send inbound_events", got)
	}
	attrs := map[string]string{}
	for _, a := range got[0].Attributes {
		attrs[string(a.Key)] = a.Value.String()
	}
	for k, want := range map[string]string{
		"messaging.system": "inboxd", "messaging.destination.name": "inbound_events", "messaging.operation.type": "send",
		"messaging.message.id": strconv.FormatInt(id, 10), "inboxd.provider": "generic",
	} {
		if attrs[k] != want {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], want)
		}
	}
	for k, v := range attrs {
		for _, secret := range []string{"+1555", "hi", providertest.GenericSecret, "m-traced"} {
			if strings.Contains(v, secret) {
				t.Errorf("attribute %s = %q holds %q from the payload or a secret", k, v, secret)
			}
		}
	}
	var stored string
	s.pool.QueryRow(context.Background(), "SELECT traceparent FROM inbound_events WHERE id = $1", id).Scan(&stored)
	sc := got[0].SpanContext
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; stored != want {
		t.Errorf("stored traceparent %q, want the send span's %q", stored, want)
	}
}

// TestNoTracingStoresNothing: with tracing off, no trace context is stored.
func TestNoTracingStoresNothing(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	if status, body := s.post(t, "evt_plain", "application/json", sampleGeneric("m"), s.secret); status != 200 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var n int
	s.pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE traceparent IS NOT NULL").Scan(&n)
	if n != 0 {
		t.Errorf("%d events with a traceparent while tracing is off", n)
	}
}
