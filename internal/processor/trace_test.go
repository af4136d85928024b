package processor

import (
	"context"
	"errors"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// sendContext is the trace context ingest stored with the test's events.
const sendContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func attrs(kv []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, a := range kv {
		m[string(a.Key)] = a.Value.String()
	}
	return m
}

func linksTo(s tracetest.SpanStub, spanID string) bool {
	for _, l := range s.Links {
		if l.SpanContext.SpanID().String() == spanID {
			return true
		}
	}
	return false
}

// TestProcessSpans: a batch is a "process inbound_events" span linked to each event's
// send span, with a "receive" child for its claim; each event's outcome is its own
// process span, linked to its send span, carrying the event id, attempt and outcome
// (a failure as an error status); nothing from the payload is in any of them.
func TestProcessSpans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, url := newDB(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	var failed atomic.Bool
	flaky := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		if err == nil && n.Message.Text == "flaky" && failed.CompareAndSwap(false, true) {
			return provider.Normalized{}, errors.New("upstream hiccup")
		}
		return n, err
	}
	t0 := time.Now()
	insertEvents(t, pool, received("m-1", "secret text", t0), received("m-2", "flaky", t0))
	if _, err := pool.Exec(ctx, "UPDATE inbound_events SET traceparent = $1", sendContext); err != nil {
		t.Fatal(err)
	}
	start(t, url, Config{Tracing: tp, Normalizers: map[string]provider.Normalizer{"generic": flaky}})
	waitSettled(t, pool, 20*time.Second)
	// A batch's spans end after its commit: wait for the three outcomes' spans
	// (m-1 processed, m-2 retried then processed) and the batch that holds the last.
	pgtest.Eventually(t, "every outcome's span ended", 10*time.Second, func() (bool, error) {
		var events, batches int
		for _, s := range spans.GetSpans() {
			if s.Name == "process inbound_events" {
				if attrs(s.Attributes)["messaging.message.id"] != "" {
					events++
				} else {
					batches++
				}
			}
		}
		return events == 3 && batches >= 2, nil
	})
	var ids []string
	rows, _ := pool.Query(ctx, "SELECT id::text FROM inbound_events ORDER BY id")
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}

	var batches, claims int
	outcomes := map[string][]string{} // event id → outcomes
	for _, s := range spans.GetSpans() {
		a := attrs(s.Attributes)
		for k, v := range a {
			if strings.Contains(v, "secret text") || strings.Contains(v, "+1555") {
				t.Errorf("span %s attribute %s = %q holds payload content", s.Name, k, v)
			}
		}
		switch {
		case s.Name == "receive inbound_events":
			claims++
			if a["messaging.operation.type"] != "receive" {
				t.Errorf("claim span attributes %v", a)
			}
		case s.Name == "process inbound_events" && a["messaging.message.id"] == "":
			batches++
			if !linksTo(s, "00f067aa0ba902b7") || a["messaging.batch.message_count"] == "" || s.SpanKind != trace.SpanKindConsumer {
				t.Errorf("batch span %+v: want a consumer span linked to the send span, with the batch size", s)
			}
		case s.Name == "process inbound_events":
			id := a["messaging.message.id"]
			outcomes[id] = append(outcomes[id], a["inboxd.outcome"]+"@"+a["inboxd.attempt"])
			if !linksTo(s, "00f067aa0ba902b7") || a["messaging.system"] != "inboxd" || a["messaging.destination.name"] != "inbound_events" ||
				a["messaging.operation.type"] != "process" || a["inboxd.provider"] != "generic" {
				t.Errorf("event span %v links %v: want the messaging attributes and a link to its send span", a, s.Links)
			}
			if (a["inboxd.outcome"] == "retry") != (s.Status.Description != "") {
				t.Errorf("event span outcome %s with status %+v", a["inboxd.outcome"], s.Status)
			}
		}
	}
	if batches == 0 || claims != batches {
		t.Errorf("%d batch spans and %d claim spans, want one claim per batch", batches, claims)
	}
	if got := strings.Join(outcomes[ids[0]], ","); got != "processed@1" {
		t.Errorf("event %s outcomes %s, want processed@1", ids[0], got)
	}
	if got := strings.Join(outcomes[ids[1]], ","); got != "retry@1,processed@2" {
		t.Errorf("event %s outcomes %s, want retry@1,processed@2", ids[1], got)
	}
}
