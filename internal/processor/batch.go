package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"inboxd/internal/provider"
	"inboxd/internal/store"
)

// conflictTries is how many times a batch is sent when the server keeps rolling it
// back to settle conflicts with other transactions (applyBatch).
const conflictTries = 3

// outcomeTimeout bounds recording outcomes (or releasing claims) after the work
// itself ended, in failure or at stop. It is a fresh deadline: the work's own may be
// what expired.
const outcomeTimeout = 10 * time.Second

// process applies claimed events in one transaction (see the package comment).
//
// The work gets three quarters of the lease, so that when it runs out (a stalled
// database, a lock held by a migration) the outcome is still recorded, on a fresh
// deadline, before the lease ends: the events are retried with backoff like any
// failure, rather than sitting leased until a takeover that calls them crashed.
// Once ctx ends (shutdown), an in-flight batch still gets ShutdownTimeout to finish;
// if it cannot, its claims are released without counting the attempt.
func (p *Processor) process(ctx context.Context, events []claimed) error {
	start := time.Now()
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Lease-p.cfg.Lease/4)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.ShutdownTimeout, cancel) })
	defer stop()

	norms, errs := p.normalizeAll(events)
	outs, finished, err := p.applyBatch(work, events, norms, errs)
	if err != nil {
		rec, cancelRec := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
		defer cancelRec()
		if ctx.Err() != nil {
			return errors.Join(err, p.release(rec, events))
		}
		return p.failBatch(trace.ContextWithSpan(rec, trace.SpanFromContext(ctx)), events, err, start)
	}
	p.report(ctx, events, outs, finished, start)
	if len(finished) > 0 {
		signal(p.changed)
	}
	return nil
}

// normalizeAll runs each event's normalizer.
func (p *Processor) normalizeAll(events []claimed) ([]provider.Normalized, []error) {
	norms, errs := make([]provider.Normalized, len(events)), make([]error, len(events))
	for i, ev := range events {
		norms[i], errs[i] = normalize(p.cfg.Normalizers, ev)
	}
	return norms, errs
}

// normalize runs ev's normalizer, turning a panic into an error (a normalizer bug must
// cost one attempt of one event, not the process) and refusing a result that is not
// exactly one of message and status, which queueApply relies on.
func normalize(normalizers map[string]provider.Normalizer, ev claimed) (n provider.Normalized, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("normalizer panicked: %v", r)
		}
	}()
	fn, ok := normalizers[provider.Base(ev.Provider)]
	if !ok {
		return provider.Normalized{}, fmt.Errorf("%w: no normalizer for provider %q", provider.ErrPermanent, ev.Provider)
	}
	n, err = fn(ev.Payload, ev.ReceivedAt)
	if err == nil && (n.Message == nil) == (n.Status == nil) {
		err = fmt.Errorf("%w: normalizer returned neither or both of message and status", provider.ErrPermanent)
	}
	return n, err
}

// applyBatch is transaction 2. Fast path: every event's statements and every outcome
// in one round trip and one implicit transaction (session.go). A transaction the
// server rolled back to settle a conflict with another (store.Conflicted: a deadlock)
// is sent again at once, up to conflictTries times in all, within the same claim: the
// other transaction went on, and a retry with backoff would cost the events an attempt
// and a second. If that transaction is refused on its merits (not a lost connection or
// a timeout, which would fail the same way again), each event is applied alone in a
// savepoint, so that one bad event costs only itself. It returns every event's outcome
// and the ids whose outcome was recorded.
func (p *Processor) applyBatch(ctx context.Context, events []claimed, norms []provider.Normalized, errs []error) ([]outcome, []int64, error) {
	var good []int
	outs := make([]outcome, len(events))
	for i := range events {
		outs[i] = p.decide(events[i], errs[i])
		if errs[i] == nil {
			good = append(good, i)
			outs[i].contact = norms[i].Contact()
		}
	}
	var finished []int64
	var err error
	for try := 1; ; try++ {
		b := p.batch()
		if err := queueApply(b, pick(events, good), pick(norms, good)); err != nil {
			return outs, nil, err
		}
		queueFinish(b, p.finishArgs(outs), &finished)
		err = p.send(ctx, b) // one round trip, one transaction: all of it or none
		if !store.Conflicted(err) || try == conflictTries || ctx.Err() != nil {
			break
		}
		p.log.Info("batch rolled back by a conflict with another transaction; sending it again",
			zap.Int("events", len(events)), zap.Int("try", try), zap.Error(err))
	}
	if err == nil || len(good) <= 1 || store.Transient(err) {
		return outs, finished, err
	}
	p.log.Warn("batch failed as a whole; applying its events one by one", zap.Int("events", len(events)), zap.Error(err))
	err = pgx.BeginTxFunc(ctx, p.pool, p.begin(), func(tx pgx.Tx) error {
		for _, i := range good {
			outs[i] = p.decide(events[i], applyAlone(ctx, tx, events[i], norms[i]))
			outs[i].contact = norms[i].Contact()
		}
		b := &pgx.Batch{}
		queueFinish(b, p.finishArgs(outs), &finished)
		return tx.SendBatch(ctx, b).Close()
	})
	return outs, finished, err
}

// queueFinish queues the finish statement, collecting the ids it changed into ids.
func queueFinish(b *pgx.Batch, args []any, ids *[]int64) {
	b.Queue(finish, args...).Query(func(rows pgx.Rows) error {
		var err error
		*ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
}

// applyAlone applies one event inside a savepoint.
func applyAlone(ctx context.Context, tx pgx.Tx, ev claimed, n provider.Normalized) error {
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		return sendApply(ctx, sp, []claimed{ev}, []provider.Normalized{n}, nil)
	})
}

// sendApply sends the statements that apply events (and, with more, whatever the
// caller adds to the same batch) in one round trip.
func sendApply(ctx context.Context, tx pgx.Tx, events []claimed, norms []provider.Normalized, more func(*pgx.Batch)) error {
	b := &pgx.Batch{}
	if err := queueApply(b, events, norms); err != nil {
		return err
	}
	if more != nil {
		more(b)
	}
	return tx.SendBatch(ctx, b).Close()
}

func pick[T any](all []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = all[j]
	}
	return out
}

// decide turns an attempt's error into the event's next state.
func (p *Processor) decide(ev claimed, err error) outcome {
	o := outcome{id: ev.ID, attempts: ev.Attempts, state: "processed"}
	switch {
	case err == nil:
	case isPermanent(err):
		o.state, o.err = "dead", err.Error()
	case ev.Attempts >= p.cfg.MaxAttempts:
		o.state, o.err = "dead", fmt.Sprintf("attempt %d of %d: %v", ev.Attempts, p.cfg.MaxAttempts, err)
	default:
		o.state, o.err, o.delay = "pending", err.Error(), Backoff(ev.Attempts)
	}
	return o
}

// isPermanent: the normalizer said so, or Postgres refused the data itself (a value
// it cannot store, a key too long for its index), which no retry changes.
func isPermanent(err error) bool {
	return errors.Is(err, provider.ErrPermanent) || store.Unstorable(err)
}

// failBatch handles a batch whose transaction failed as a whole even event by event
// (connection lost, a timeout, the database in trouble): every event is retried with
// backoff; the attempt was counted at claim, so an event that itself stalls the
// database still runs out of attempts. If even that cannot be recorded, the leases
// expire and the sweep takes over.
func (p *Processor) failBatch(ctx context.Context, events []claimed, cause error, start time.Time) error {
	outs := make([]outcome, len(events))
	for i, ev := range events {
		outs[i] = p.decide(ev, fmt.Errorf("applying its batch: %w", cause))
	}
	finished, err := p.recordOutcomes(ctx, outs)
	if err != nil {
		return errors.Join(fmt.Errorf("apply batch of %d: %w", len(events), cause), fmt.Errorf("record outcomes: %w", err))
	}
	p.report(ctx, events, outs, finished, start)
	return fmt.Errorf("apply batch of %d: %w", len(events), cause)
}

// recordOutcomes runs finish on its own and returns the ids it changed.
func (p *Processor) recordOutcomes(ctx context.Context, outs []outcome) ([]int64, error) {
	b := p.batch()
	var finished []int64
	queueFinish(b, p.finishArgs(outs), &finished)
	return finished, p.send(ctx, b)
}

// report logs, counts and traces the outcomes finish recorded (processing began at
// start). An outcome it did not record (the lease was taken over meanwhile) is the new
// holder's to count.
func (p *Processor) report(ctx context.Context, events []claimed, outs []outcome, finished []int64, start time.Time) {
	p.metrics.batchSize.Observe(float64(len(events)))
	recorded := make(map[int64]bool, len(finished))
	for _, id := range finished {
		recorded[id] = true
	}
	var earliestRetry time.Duration
	var minute counts
	now := time.Now()
	for i, o := range outs {
		ev := events[i]
		fields := []zap.Field{zap.Int64("event_id", ev.ID), zap.String("provider", ev.Provider), zap.Int("attempt", ev.Attempts)}
		p.traceOutcome(ctx, ev, o, recorded[ev.ID], start)
		if !recorded[ev.ID] {
			p.log.Warn("outcome not recorded: the lease was taken over meanwhile", append(fields, zap.String("outcome", o.state))...)
			continue
		}
		minute.observe(o.state, now.Sub(ev.ReceivedAt))
		switch o.state {
		case "processed":
			p.metrics.processed.WithLabelValues(ev.Provider, "processed").Inc()
			p.metrics.latency.Observe(now.Sub(ev.ReceivedAt).Seconds())
			p.log.Debug("event processed", fields...)
		case "pending":
			p.metrics.processed.WithLabelValues(ev.Provider, "retry").Inc()
			p.log.Warn("event will be retried", append(fields, zap.Duration("backoff", o.delay), zap.String("error", o.err))...)
			if earliestRetry == 0 || o.delay < earliestRetry {
				earliestRetry = o.delay
			}
		case "dead":
			p.metrics.processed.WithLabelValues(ev.Provider, "dead").Inc()
			p.log.Error("event dead", append(fields, zap.String("error", o.err))...)
		}
	}
	p.rollup.add(now, minute)
	if earliestRetry > 0 {
		time.AfterFunc(earliestRetry, p.Wake) // be there when the retry is due, not at the next sweep
	}
}
