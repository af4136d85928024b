package ingest

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Event is one provider event, ready to store.
type Event struct {
	Provider   string
	ExternalID string
	Payload    []byte // JSON
	Headers    []byte // JSON object of allow-listed request headers
}

// Result is what storing an event did: its row id, and whether that row existed.
type Result struct {
	ID        int64 `json:"id"`
	Duplicate bool  `json:"duplicate"`
}

var (
	// ErrUnavailable means the events could not be committed; the provider must retry.
	ErrUnavailable = errors.New("database unavailable")
	// errUnstorable means Postgres refused the payload itself (e.g. a \u0000 escape,
	// which jsonb cannot hold): retrying would never succeed.
	errUnstorable = errors.New("payload cannot be stored")
)

// Writer commits events for many concurrent requests together (group commit).
//
// A commit is the ceiling on a small machine: every transaction that NOTIFYs takes a
// database-wide lock at commit and holds it through the WAL flush, so one transaction
// per webhook tops out near 3,000-4,000/s (SPEC §8, docs/benchmarks.md). Requests
// queue on one channel; the committer takes whatever is queued (up to maxBatch
// events), inserts it in one statement, commits once, and only then answers every
// request in the batch. At low load a batch is one request and costs one round trip;
// under load batches grow and the commit is shared. There is one committer: several
// only queued on that NOTIFY lock, and their batches were smaller (measured at
// 1,000/s: ack p99 20 ms with four, 10-17 ms with one).
type Writer struct {
	pool       *pgxpool.Pool
	log        *zap.Logger
	onCommit   func()
	queue      chan *writeReq
	done       chan struct{}
	committers int
	maxBatch   int
	metrics    *metrics
}

type writeReq struct {
	events []Event
	reply  chan writeReply // capacity 1: the committer never blocks on a caller that left
}

type writeReply struct {
	results []Result
	err     error
}

// NewWriter returns a Writer on pool. onCommit (may be nil) runs after each commit
// that inserted new events: the wiring uses it to wake this process's processor
// without waiting for NOTIFY to come back from the database.
func NewWriter(pool *pgxpool.Pool, log *zap.Logger, m *metrics, onCommit func()) *Writer {
	return &Writer{
		pool:       pool,
		log:        log,
		onCommit:   onCommit,
		queue:      make(chan *writeReq, 1024),
		done:       make(chan struct{}),
		committers: 1,
		maxBatch:   256,
		metrics:    m,
	}
}

// Run commits queued requests until ctx ends. Stop the HTTP server first: requests
// that arrive after Run returned are answered ErrUnavailable.
func (w *Writer) Run(ctx context.Context) error {
	defer close(w.done)
	g, ctx := errgroup.WithContext(ctx)
	for range w.committers {
		g.Go(func() error { w.commitLoop(ctx); return nil })
	}
	return g.Wait()
}

// Write stores events atomically (all or none) and returns one Result per event, in
// order. It returns only after the commit, so a nil error means the events are durable.
func (w *Writer) Write(ctx context.Context, events []Event) ([]Result, error) {
	if len(events) == 0 {
		return []Result{}, nil // e.g. a Meta change of a field that carries no messages
	}
	req := &writeReq{events: events, reply: make(chan writeReply, 1)}
	select {
	case w.queue <- req:
	case <-w.done:
		return nil, fmt.Errorf("writer stopped: %w", ErrUnavailable)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.results, r.err
	case <-w.done:
		// Every committer has returned, and each answered the requests it took
		// before returning: a reply, if any, is already here. Without one, the
		// request was still queued and nothing of it was committed.
		select {
		case r := <-req.reply:
			return r.results, r.err
		default:
			return nil, fmt.Errorf("writer stopped before this request was committed: %w", ErrUnavailable)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (w *Writer) commitLoop(ctx context.Context) {
	for {
		var first *writeReq
		select {
		case first = <-w.queue:
		case <-ctx.Done():
			return
		}
		batch := w.collect(first)
		w.metrics.batchSize.Observe(float64(len(batch)))
		w.commit(ctx, batch)
	}
}

// collect takes first and whatever else is queued right now, up to maxBatch events.
// It never waits for more: latency at low load stays one round trip.
func (w *Writer) collect(first *writeReq) []*writeReq {
	batch := []*writeReq{first}
	n := len(first.events)
	for n < w.maxBatch {
		select {
		case r := <-w.queue:
			batch = append(batch, r)
			n += len(r.events)
		default:
			return batch
		}
	}
	return batch
}

// commit stores a batch. If Postgres refuses a payload, the batch is retried one
// request at a time so that only the request that carried it fails.
func (w *Writer) commit(ctx context.Context, batch []*writeReq) {
	results, inserted, err := w.insert(ctx, batch)
	if errors.Is(err, errUnstorable) && len(batch) > 1 {
		for _, r := range batch {
			w.commit(ctx, []*writeReq{r})
		}
		return
	}
	if err != nil {
		w.log.Warn("commit webhook events", zap.Int("requests", len(batch)), zap.Error(err))
	}
	for i, r := range batch {
		if err != nil {
			r.reply <- writeReply{err: err}
			continue
		}
		r.reply <- writeReply{results: results[i]}
	}
	if inserted > 0 && w.onCommit != nil {
		w.onCommit()
	}
}

// insertEvents inserts in one statement. Rows are sorted by key first: inboxd
// processes sharing a database, each with its committer, then take their locks on
// overlapping keys in the same order and cannot deadlock (a redelivery storm sent to
// several instances does exactly that). ON CONFLICT DO NOTHING
// skips a key that exists, or that an earlier row of the same statement inserted.
const insertEvents = `
INSERT INTO inbound_events (provider, external_id, payload, headers)
SELECT provider, external_id, payload::jsonb, headers::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(provider, external_id, payload, headers)
ORDER BY provider, external_id
ON CONFLICT (provider, external_id) DO NOTHING
RETURNING id, provider, external_id`

// selectExisting finds the ids of keys that were already stored.
const selectExisting = `
SELECT e.id, e.provider, e.external_id
FROM inbound_events e
JOIN unnest($1::text[], $2::text[]) AS k(provider, external_id)
  ON e.provider = k.provider AND e.external_id = k.external_id`

type eventKey struct{ provider, externalID string }

// insert runs one transaction for the batch and maps rows back to each request.
func (w *Writer) insert(ctx context.Context, batch []*writeReq) ([][]Result, int, error) {
	var providers, externalIDs, payloads, headers []string
	for _, r := range batch {
		for _, e := range r.events {
			providers = append(providers, e.Provider)
			externalIDs = append(externalIDs, e.ExternalID)
			payloads = append(payloads, string(e.Payload))
			headers = append(headers, string(e.Headers))
		}
	}
	fresh := map[eventKey]int64{}
	existing := map[eventKey]int64{}
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if err := collectIDs(ctx, tx, fresh, insertEvents, providers, externalIDs, payloads, headers); err != nil {
			return err
		}
		if len(fresh) == len(providers) {
			return nil
		}
		return collectIDs(ctx, tx, existing, selectExisting, providers, externalIDs)
	})
	if err != nil {
		return nil, 0, classify(err)
	}
	inserted := len(fresh)
	results := make([][]Result, len(batch))
	for i, r := range batch {
		results[i] = make([]Result, len(r.events))
		for j, e := range r.events {
			k := eventKey{e.Provider, e.ExternalID}
			if id, ok := fresh[k]; ok {
				results[i][j] = Result{ID: id}
				delete(fresh, k) // a later copy in this batch is a duplicate of this one
				existing[k] = id
				continue
			}
			results[i][j] = Result{ID: existing[k], Duplicate: true}
		}
	}
	return results, inserted, nil
}

func collectIDs(ctx context.Context, tx pgx.Tx, into map[eventKey]int64, sql string, args ...any) error {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	var id int64
	var k eventKey
	_, err = pgx.ForEachRow(rows, []any{&id, &k.provider, &k.externalID}, func() error {
		into[k] = id
		return nil
	})
	return err
}

// classify separates payloads Postgres will never accept (data exceptions, class 22)
// from everything else, which is the database's trouble and worth a retry.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 && pgErr.Code[:2] == "22" {
		return fmt.Errorf("%w: %s", errUnstorable, pgErr.Message)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
