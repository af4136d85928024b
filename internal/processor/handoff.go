package processor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Handoff takes events from this process's ingest straight to its workers, so that
// an event's row is written twice (inserted, finished) instead of three times
// (inserted, claimed, finished): write-once claims.
//
// Ingest asks Reserve how many of a commit's events the processor takes, and inserts
// those already claimed (pending ──claim──▶ processing happens in the insert itself:
// state processing, attempt 1, leased to Owner for Lease). After the commit it hands
// the inserted ones over with Adopt, and a worker applies them as a batch with no
// claim statement; if the commit failed, or rows were duplicates, Unreserve gives the
// places back. Everything the queue promises holds, because an adopted row is exactly
// a claimed one: its attempt is counted in the commit that stored it (a poison event
// still runs out of attempts), its finish is fenced like any other, and if this
// process dies before applying it, its lease expires and the sweep of any process
// takes it over (queue.go, rescueExpired).
//
// The handoff is bounded (limit events reserved or waiting), so a process that falls
// behind stops adopting: further events are inserted pending and claimed fairly
// across lanes like those of other processes. Large requests are never adopted
// (ingest's bulk committer): a backlog belongs in the fair claim.
type Handoff struct {
	owner    string
	lease    time.Duration
	limit    int64
	reserved atomic.Int64    // places promised to commits in flight, or taken by batches waiting in ch
	ch       chan []claimed  // committed batches waiting for a worker; never full (see Reserve)
	mu       sync.Mutex      // orders Adopt's send against close
	closed   bool            // the workers have stopped
	release  func([]claimed) // hands back what no worker will apply (set by the Processor)
}

func newHandoff(owner string, lease time.Duration, limit int) *Handoff {
	return &Handoff{owner: owner, lease: lease, limit: int64(limit), ch: make(chan []claimed, limit)}
}

// Owner is the name adopted rows are leased to (inbound_events.locked_by).
func (h *Handoff) Owner() string { return h.owner }

// Lease is how long an adopted row is leased for.
func (h *Handoff) Lease() time.Duration { return h.lease }

// Reserve returns how many of n events (0 to n) the processor takes straight from
// their commit; ingest inserts that many claimed. It never blocks.
func (h *Handoff) Reserve(n int) int {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return 0
	}
	for {
		cur := h.reserved.Load()
		take := min(int64(n), h.limit-cur)
		if take <= 0 {
			return 0
		}
		if h.reserved.CompareAndSwap(cur, cur+take) {
			return int(take)
		}
	}
}

// Unreserve gives back n places that Reserve granted and no row took (the commit
// failed, or the events were stored already).
func (h *Handoff) Unreserve(n int) {
	if n > 0 {
		h.reserved.Add(-int64(n))
	}
}

// Adopted is an event ingest committed claimed by this process.
type Adopted struct {
	ID          int64
	Provider    string
	ReceivedAt  time.Time
	Payload     []byte
	Traceparent string
	Lane        string
}

// Adopt hands over committed events that were inserted claimed under a reservation
// (at most as many as were reserved; Unreserve the rest). It never blocks. Once the
// workers have stopped, it releases them back to pending.
func (h *Handoff) Adopt(events []Adopted) {
	if len(events) == 0 {
		return
	}
	batch := make([]claimed, len(events))
	for i, e := range events {
		batch[i] = claimed{ID: e.ID, Provider: e.Provider, Attempts: 1, ReceivedAt: e.ReceivedAt,
			Payload: e.Payload, State: "processing", Lane: e.Lane}
		if e.Traceparent != "" {
			batch[i].Traceparent = &e.Traceparent
		}
	}
	h.mu.Lock()
	if !h.closed {
		// Each batch holds at least one reserved place and at most limit are
		// reserved, so ch (capacity limit) has room: this never blocks.
		h.ch <- batch
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.reserved.Add(-int64(len(batch)))
	h.release(batch)
}

// take appends to b the batches waiting for a worker, without blocking, while b
// holds fewer than max events: the commits that queued while the workers were busy
// are applied in one transaction, not one each.
func (h *Handoff) take(b []claimed, max int) []claimed {
	for len(b) < max {
		select {
		case more := <-h.ch:
			h.reserved.Add(-int64(len(more)))
			b = append(b, more...)
		default:
			return b
		}
	}
	return b
}

// got counts a batch a worker received from ch itself.
func (h *Handoff) got(b []claimed) { h.reserved.Add(-int64(len(b))) }

// close stops adoption once the workers have stopped and releases what was waiting.
// An Adopt that races with it releases its own batch.
func (h *Handoff) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for b := h.take(nil, 1); b != nil; b = h.take(nil, 1) {
		h.release(b)
	}
}

// handoffLimit is how many events a process adopts at most at a time: four batches.
// More would only queue in memory what the fair claim can as well hand out.
func handoffLimit(batchSize int) int { return 4 * batchSize }

// releaseAdopted hands adopted events that no worker will apply back to pending,
// without counting the attempt, as a graceful stop does with in-flight claims.
func (p *Processor) releaseAdopted(events []claimed) {
	ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
	defer cancel()
	if err := p.release(ctx, events); err != nil {
		p.log.Warn("release adopted events at stop; their leases expire and the sweep takes them over",
			zap.Int("events", len(events)), zap.Error(err))
	}
}

// serveHandoff is a worker that only applies batches from the handoff, beside the
// workers that also claim. While a backlog keeps every claiming worker busy, events
// this process commits would otherwise wait for one of them to finish a backlog
// batch: with it, they wait for nothing but the CPU.
func (p *Processor) serveHandoff(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-p.handoff.ch:
			p.handoff.got(b)
			p.processAdopted(ctx, p.handoff.take(b, p.cfg.BatchSize))
		}
	}
}

// processAdopted applies a batch from the handoff.
func (p *Processor) processAdopted(ctx context.Context, events []claimed) {
	p.metrics.claims.WithLabelValues("handoff").Inc()
	bctx, span := p.startBatch(ctx, events, time.Now())
	defer span.End()
	if err := p.process(bctx, events); err != nil && ctx.Err() == nil {
		p.log.Warn("processing adopted events", zap.Int("events", len(events)), zap.Error(err))
	}
}
