package tracing

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// stalledExporter stands for a batch processor whose collector is away: it takes a
// span and holds on until released.
type stalledExporter struct {
	*tracetest.SpanRecorder
	got     chan struct{}
	release chan struct{}
}

func (e *stalledExporter) OnEnd(s sdktrace.ReadOnlySpan) {
	e.got <- struct{}{}
	<-e.release
	e.SpanRecorder.OnEnd(s)
}

// TestDroppingQueue: while the exporter is stalled, spans wait in the queue up to its
// size and the rest are dropped and counted, never blocking the code that ended
// them; what waited is exported once it is free; a span that ends after Shutdown is
// dropped and counted rather than sent on a closed queue.
func TestDroppingQueue(t *testing.T) {
	next := &stalledExporter{SpanRecorder: tracetest.NewSpanRecorder(), got: make(chan struct{}, 16), release: make(chan struct{})}
	q := newDroppingQueue(next, 2)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(q))
	tracer := tp.Tracer("test")
	end := func() {
		_, span := tracer.Start(context.Background(), "span")
		span.End()
	}
	end()
	<-next.got // the feeding goroutine holds the first span, in the exporter
	for range 9 {
		end() // 2 wait in the queue, 7 are dropped
	}
	if got := q.dropped.Load(); got != 7 {
		t.Errorf("dropped %d spans, want 7 (10 ended, 1 in the exporter, 2 queued)", got)
	}
	close(next.release)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(next.Ended()); got != 3 {
		t.Errorf("exported %d spans, want the 3 not dropped", got)
	}
	_, late := tracer.Start(context.Background(), "late")
	q.OnEnd(late.(sdktrace.ReadOnlySpan)) // as a span ending during Shutdown would
	if got := q.dropped.Load(); got != 8 {
		t.Errorf("after Shutdown, dropped %d, want the late span counted too", got)
	}
}
