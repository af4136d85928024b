package tracing

import (
	"context"
	"sync"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// droppingQueue is the export queue: a bounded channel in front of the SDK's batch
// processor, which it feeds from one goroutine. The batch processor blocks that
// goroutine while its own batch is full (WithBlocking), never a request; when the
// channel is full a span is dropped and counted. (The SDK's own processor drops
// silently: nothing says how many.) A span that ends after Shutdown (a request the
// HTTP server's Close cut short, still unwinding) is dropped and counted too.
type droppingQueue struct {
	next    sdktrace.SpanProcessor
	spans   chan sdktrace.ReadOnlySpan
	dropped atomic.Uint64
	done    chan struct{}

	mu     sync.RWMutex // held to send on spans, and to close it
	closed bool
}

func newDroppingQueue(next sdktrace.SpanProcessor, size int) *droppingQueue {
	q := &droppingQueue{next: next, spans: make(chan sdktrace.ReadOnlySpan, size), done: make(chan struct{})}
	go q.feed()
	return q
}

func (q *droppingQueue) feed() {
	defer close(q.done)
	for s := range q.spans {
		q.next.OnEnd(s)
	}
}

func (q *droppingQueue) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {
	q.next.OnStart(parent, s)
}

func (q *droppingQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.dropped.Add(1)
		return
	}
	select {
	case q.spans <- s:
	default:
		q.dropped.Add(1)
	}
}

// Shutdown hands what is queued to the batch processor and shuts it down.
func (q *droppingQueue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.spans)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.next.Shutdown(ctx)
}

func (q *droppingQueue) ForceFlush(ctx context.Context) error { return q.next.ForceFlush(ctx) }
