package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/processor"
	"inboxd/internal/store"
)

// Event is one provider event, ready to store.
type Event struct {
	Provider   string
	ExternalID string
	Payload    []byte // JSON that jsonb accepts (see storable)
	Headers    []byte // JSON object of allow-listed request headers
	RequestID  string // the X-Request-Id of the request that carried it
	Lane       string // provider.Lane: what the claim is fair across (inbound_events.lane)
	// Traceparent is the W3C trace context of the span that stored it; empty when
	// tracing is off.
	Traceparent string
}

// Result is what storing an event did: its row id, and whether that row existed.
type Result struct {
	ID        int64 `json:"id"`
	Duplicate bool  `json:"duplicate"`
}

// DefaultTimeout is the default of WriterConfig.Timeout: the longest a webhook waits for
// its commit. Twilio gives up on a webhook after 15 s; answering 503 well before that
// lets the provider's retry happen while it still counts.
const DefaultTimeout = 5 * time.Second

// MinTimeout is the shortest Timeout the service accepts (INBOX_INGEST_TIMEOUT): a
// commit on a busy server takes tens of milliseconds now and then.
const MinTimeout = 100 * time.Millisecond

var (
	// ErrUnavailable means the events could not be committed, or not in time; the
	// provider must retry.
	ErrUnavailable = errors.New("database unavailable")
	// errUnstorable means Postgres refused the payload itself (a value it cannot
	// store): retrying would never succeed.
	errUnstorable = errors.New("payload cannot be stored")
	// errClientGone means the client disconnected before its answer: nothing was
	// acknowledged, and nobody is left to tell.
	errClientGone = errors.New("client disconnected")
)

// Connections is how many connections a Writer uses at most: one per committer (the
// small requests' and the large ones'). A pool of its own that size keeps other users
// of the database from taking them.
const Connections = 2

// Writer commits events for many concurrent requests together (group commit).
//
// A commit is the ceiling on a small machine: every transaction that NOTIFYs takes a
// database-wide lock at commit and holds it through the WAL flush, so one transaction
// per webhook tops out near 3,000-4,000/s (docs/benchmarks.md). Requests queue on one
// channel; the committer takes whatever is queued (up to maxBatch events), inserts it
// in one statement, commits once, and only then answers every request in the batch.
// At low load a batch is one request and costs one round trip; under load batches
// grow and the commit is shared. There is one committer: several only queued on that
// NOTIFY lock, and their batches were smaller.
//
// Large requests are committed on their own. A request of more than bulkEvents
// events or bulkBytes of payload (a Meta POST carrying a backlog's 500 messages) goes
// to a second committer, which commits such requests together, so that their inserts,
// long for the rows and indexes they write, never hold a small webhook's commit back:
// while 8 senders flooded one process with 500-message POSTs, single-event webhooks
// beside them waited p50 824 ms for their 200 behind one committer (and got 503s on a
// busier machine); docs/benchmarks.md has the figures with two. Two committers still
// share the commit lock, but only for the moment of each commit, not the insert.
//
// Nothing waits for ever. A request waits at most Timeout for its commit, queue time
// included, and is then answered ErrUnavailable (503, retry); the committer skips
// requests already answered, and the commit itself is bounded by the same deadline on
// both sides: the context here, lock_timeout and statement_timeout in the server.
type Writer struct {
	pool     *pgxpool.Pool
	log      *zap.Logger
	onCommit func(inserted int)
	handoff  *processor.Handoff
	timeout  time.Duration
	// timeoutName is the timeout's setting, for the 503's reason.
	timeoutName string
	settings    string // the transaction's server-side timeouts (store.SetLocal)
	inTx        func(ctx context.Context, tx pgx.Tx, stored []Stored) error
	queue       chan *writeReq // small requests
	bulk        chan *writeReq // large requests (isBulk)
	done        chan struct{}
	maxBatch    int
	wait        time.Duration // CommitWait
	metrics     *metrics
	health      health
}

type writeReq struct {
	ctx    context.Context // the request's, with its deadline
	events []Event
	reply  chan writeReply // capacity 1: the committer never blocks on a caller that left
}

type writeReply struct {
	results []Result
	err     error
}

// WriterConfig tunes a Writer.
type WriterConfig struct {
	// Timeout is the longest a request waits for its commit
	// (0: DefaultTimeout).
	Timeout time.Duration
	// CommitWait: a commit waits for more requests until this
	// long after the previous one began (see collect). 0 commits at once;
	// DefaultCommitWait is the service's default.
	CommitWait time.Duration
	// OnCommit (may be nil) runs after each commit that inserted new events, with
	// their number: the wiring uses it to tell this process's processor at once,
	// without waiting for NOTIFY to come back from the database.
	OnCommit func(inserted int)
	// Handoff (may be nil) is this process's processor's: small requests' events
	// are inserted already claimed by it, as many as it reserves, and handed to it
	// after the commit, so that their rows are not written again to claim them
	// (processor.Handoff). OnCommit counts only the events inserted pending.
	Handoff *processor.Handoff
	// SettingName names the timeout's setting in the 503's reason (nil: its key).
	SettingName func(key string) string
}

// A request is large (committed by the bulk committer) above either bound; a bulk
// commit takes up to maxBulkBatch events.
const (
	bulkEvents   = 32
	bulkBytes    = 256 << 10
	maxBulkBatch = 2048
)

func isBulk(events []Event) bool {
	if len(events) > bulkEvents {
		return true
	}
	n := 0
	for _, e := range events {
		n += len(e.Payload)
	}
	return n > bulkBytes
}

// DefaultCommitWait is CommitWait's default. At a thousand webhooks a second
// it puts two or three in each commit instead of one (docs/benchmarks.md), for at
// most this much more time before the 200; webhooks further apart than this are
// committed at once.
const DefaultCommitWait = 10 * time.Millisecond

// NewWriter returns a Writer on pool.
func NewWriter(pool *pgxpool.Pool, log *zap.Logger, m *metrics, cfg WriterConfig) *Writer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	ms := cfg.Timeout.Milliseconds()
	timeoutName := "INGEST_TIMEOUT"
	if cfg.SettingName != nil {
		timeoutName = cfg.SettingName(timeoutName)
	}
	return &Writer{
		timeoutName: timeoutName,
		pool:        pool,
		log:         log,
		onCommit:    cfg.OnCommit,
		handoff:     cfg.Handoff,
		timeout:     cfg.Timeout,
		// Set per transaction, not per session: nothing outlives the transaction, which
		// is what a transaction-mode pooler (PgBouncer) requires.
		settings: store.SetLocal("lock_timeout", strconv.FormatInt(ms, 10), "statement_timeout", strconv.FormatInt(ms, 10)),
		queue:    make(chan *writeReq, 1024),
		bulk:     make(chan *writeReq, 256),
		done:     make(chan struct{}),
		maxBatch: 256,
		wait:     cfg.CommitWait,
		metrics:  m,
	}
}

// Stored is an event a commit inserted, as AlsoInTx's fn sees it.
type Stored struct {
	ID         int64
	Provider   string
	ReceivedAt time.Time
	Payload    []byte // the JSON the row stores
}

// AlsoInTx makes every commit run fn inside its transaction, after the insert, with
// the events it inserted in id order (none for a batch of duplicates only), so that
// fn's writes commit exactly when the events do. Call it before Run. The River
// baseline of the benchmark (bench/river) enqueues its jobs there, the way River
// enqueues transactionally; inboxd itself needs nothing more than its trigger. With
// fn set, each commit is an explicit transaction: two round trips more.
func (w *Writer) AlsoInTx(fn func(ctx context.Context, tx pgx.Tx, stored []Stored) error) {
	w.inTx = fn
}

// Run commits queued requests until ctx ends: small ones and large ones, each with
// its committer. Stop the HTTP server first: requests that arrive after Run returned
// are answered ErrUnavailable.
func (w *Writer) Run(ctx context.Context) error {
	defer close(w.done)
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, w.bulk, maxBulkBatch, 0, false) })
	w.run(ctx, w.queue, w.maxBatch, w.wait, true)
	wg.Wait()
	return nil
}

// run is one committer: it takes requests from queue and commits them in batches of
// up to limit events, waiting for more until wait after the previous commit began.
// With adopt, it offers the events to the handoff (the bulk committer does not: a
// flood belongs in the fair claim, docs/lanes.md).
func (w *Writer) run(ctx context.Context, queue chan *writeReq, limit int, wait time.Duration, adopt bool) {
	var lastCommit time.Time
	for {
		var first *writeReq
		select {
		case first = <-queue:
		case <-ctx.Done():
			return
		}
		batch := collect(queue, first, lastCommit.Add(wait), limit)
		if len(batch) == 0 {
			continue
		}
		lastCommit = time.Now()
		w.metrics.batchSize.Observe(float64(len(batch)))
		w.commit(ctx, batch, adopt)
	}
}

// Write stores events atomically (all or none) and returns one Result per event, in
// order. It returns only after the commit, so a nil error means the events are
// durable. It waits at most the Writer's timeout.
func (w *Writer) Write(ctx context.Context, events []Event) ([]Result, error) {
	if len(events) == 0 {
		return []Result{}, nil // e.g. a Meta change of a field that carries no messages
	}
	reqCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req := &writeReq{ctx: reqCtx, events: events, reply: make(chan writeReply, 1)}
	queue := w.queue
	if isBulk(events) {
		queue = w.bulk
	}
	select {
	case queue <- req:
	case <-w.done:
		return nil, fmt.Errorf("writer stopped: %w", ErrUnavailable)
	case <-reqCtx.Done():
		return nil, w.gaveUp(ctx)
	}
	select {
	case r := <-req.reply:
		return r.results, r.err
	case <-w.done:
		// The committer has returned, and answered the requests it took before
		// returning: a reply, if any, is already here. Without one, the request was
		// still queued and nothing of it was committed.
		select {
		case r := <-req.reply:
			return r.results, r.err
		default:
			return nil, fmt.Errorf("writer stopped before this request was committed: %w", ErrUnavailable)
		}
	case <-reqCtx.Done():
		return nil, w.gaveUp(ctx)
	}
}

// gaveUp says why a request stopped waiting: its client left, or the deadline passed.
// Either way its events may still be committed a moment later; the provider's retry
// is then answered as a duplicate, so nothing is stored twice or lost.
func (w *Writer) gaveUp(ctx context.Context) error {
	if ctx.Err() != nil {
		return errClientGone
	}
	w.health.stalled()
	return w.slow()
}

func (w *Writer) slow() error {
	return fmt.Errorf("%w: the database is slow: no commit within %s (%s)", ErrUnavailable, w.timeout, w.timeoutName)
}

// collect takes first and whatever else is queued, up to limit events, leaving
// out requests that were answered already (deadline passed, client gone). It waits
// for more until gather (the previous commit plus CommitWait), never later: a request
// after a quiet spell is committed at once, and under load each commit carries what
// arrived in the meantime.
func collect(queue chan *writeReq, first *writeReq, gather time.Time, limit int) []*writeReq {
	var batch []*writeReq
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	n := 0
	for r := first; ; {
		if r.ctx.Err() == nil {
			batch = append(batch, r)
			n += len(r.events)
		}
		if n >= limit {
			return batch
		}
		select {
		case r = <-queue:
			continue
		default:
		}
		wait := time.Until(gather)
		if wait <= 0 {
			return batch
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case r = <-queue:
		case <-timer.C:
			return batch
		}
	}
}

// commit stores a batch. A batch the server refused on its merits (anything but a
// lost connection or a timeout: see store.Transient) is committed again one request
// at a time, so that only the request that carried the problem fails.
func (w *Writer) commit(ctx context.Context, batch []*writeReq, adopt bool) {
	// The commit may run until the last request in it stops waiting, not longer.
	var last time.Time
	for _, r := range batch {
		if d, _ := r.ctx.Deadline(); d.After(last) {
			last = d
		}
	}
	commitCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), last)
	defer cancel()
	started := w.health.begin()
	results, inserted, err := w.insert(commitCtx, batch, adopt)
	w.health.end(started, err)
	if err != nil && len(batch) > 1 && !store.Transient(err) {
		w.log.Warn("group commit refused; committing its requests one by one",
			zap.Int("requests", len(batch)), zap.Error(err))
		for _, r := range batch {
			w.commit(ctx, []*writeReq{r}, adopt)
		}
		return
	}
	if err != nil && store.Transient(err) {
		w.log.Warn("commit webhook events", zap.Int("requests", len(batch)), zap.Error(err))
		store.ResetOnReadOnly(w.pool, err) // a failover: find the new primary
	}
	if commitCtx.Err() != nil || isTimeout(err) {
		err = fmt.Errorf("%w (%w)", w.slow(), err)
	}
	for i, r := range batch {
		if err != nil {
			r.reply <- writeReply{err: classify(err)}
			continue
		}
		r.reply <- writeReply{results: results[i]}
	}
	if inserted > 0 && w.onCommit != nil {
		w.onCommit(inserted)
	}
}

// insertEvents inserts in one statement. Rows are sorted by key first: inboxd
// processes sharing a database, each with its committer, then take their locks on
// overlapping keys in the same order and cannot deadlock (a redelivery storm sent to
// several instances does exactly that).
// ON CONFLICT DO NOTHING skips a key that exists, or that an earlier row of the same
// statement inserted.
//
// A row with adopt set is inserted claimed by this process's processor
// (processor.Handoff): processing, its first attempt counted, leased to $9 for $8
// milliseconds, just as the processor's claim would leave it. The others are pending
// and due at once.
const insertEvents = `
INSERT INTO inbound_events (provider, external_id, payload, headers, request_id, traceparent, lane,
                            state, attempts, run_at, locked_until, locked_by)
SELECT provider, external_id, payload::jsonb, headers::jsonb, NULLIF(request_id, ''), NULLIF(traceparent, ''), lane,
       CASE WHEN adopt THEN 'processing' ELSE 'pending' END,
       CASE WHEN adopt THEN 1 ELSE 0 END,
       CASE WHEN adopt THEN now() + $8::bigint * interval '1 millisecond' ELSE now() END,
       CASE WHEN adopt THEN now() + $8::bigint * interval '1 millisecond' END,
       CASE WHEN adopt THEN $9::text END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $10::bool[])
     AS t(provider, external_id, payload, headers, request_id, traceparent, lane, adopt)
ORDER BY provider, external_id
ON CONFLICT (provider, external_id) DO NOTHING
RETURNING id, provider, external_id, received_at, state = 'processing'`

// selectExisting finds the ids of keys that were already stored. One index lookup per
// key, whatever the statistics say: a plain join of the keys to the table is planned
// as a hash join over a sequential scan while the table looks empty (a new or
// truncated database), and pgx's prepared statement keeps that plan as the table
// grows. LIMIT 1 in the lateral subquery keeps the planner from flattening it into a
// join (TestSelectExistingPlan).
const selectExisting = `
SELECT e.id, e.provider, e.external_id
FROM unnest($1::text[], $2::text[]) AS k(provider, external_id)
CROSS JOIN LATERAL (
    SELECT id, provider, external_id FROM inbound_events e
    WHERE e.provider = k.provider AND e.external_id = k.external_id
    LIMIT 1
) e`

type eventKey struct{ provider, externalID string }

// row is what the insert returns of a row it inserted.
type row struct {
	id         int64
	receivedAt time.Time
	adopted    bool
}

// insert commits the batch's events and maps rows back to each request. The settings
// and the insert go as one pipelined batch: one round trip, one implicit transaction
// that commits at the batch's end. Keys that were stored already (a provider's retry)
// are looked up after the commit, a read of committed rows, only when there are some.
// With adopt, the first events of the batch, as many as the handoff reserves, are
// inserted claimed and handed over after the commit. It returns how many events it
// inserted pending.
func (w *Writer) insert(ctx context.Context, batch []*writeReq, adopt bool) ([][]Result, int, error) {
	var providers, externalIDs, payloads, headers, requestIDs, traceparents, lanes []string
	var adopts []bool
	reserved, owner, leaseMs := 0, "", int64(0)
	if adopt && w.handoff != nil {
		n := 0
		for _, r := range batch {
			n += len(r.events)
		}
		reserved, owner, leaseMs = w.handoff.Reserve(n), w.handoff.Owner(), w.handoff.Lease().Milliseconds()
	}
	for _, r := range batch {
		for _, e := range r.events {
			adopts = append(adopts, len(adopts) < reserved)
			providers = append(providers, e.Provider)
			externalIDs = append(externalIDs, e.ExternalID)
			payloads = append(payloads, string(e.Payload))
			headers = append(headers, string(e.Headers))
			requestIDs = append(requestIDs, e.RequestID)
			traceparents = append(traceparents, e.Traceparent)
			lanes = append(lanes, e.Lane)
		}
	}
	fresh := map[eventKey]row{}
	existing := map[eventKey]int64{}
	b := &pgx.Batch{}
	b.Queue(w.settings)
	b.Queue(insertEvents, providers, externalIDs, payloads, headers, requestIDs, traceparents, lanes,
		leaseMs, owner, adopts).Query(func(rows pgx.Rows) error {
		return collectRows(rows, fresh)
	})
	var err error
	if w.inTx == nil {
		err = w.pool.SendBatch(ctx, b).Close()
	} else {
		err = pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
			return w.inTx(ctx, tx, storedEvents(batch, fresh))
		})
	}
	if err == nil && len(fresh) < len(providers) {
		var rows pgx.Rows
		rows, err = w.pool.Query(ctx, selectExisting, providers, externalIDs)
		if err == nil {
			err = collectIDs(rows, existing)
		}
	}
	if err != nil {
		if reserved > 0 {
			w.handoff.Unreserve(reserved)
		}
		return nil, 0, err
	}
	pending := len(fresh)
	var adopted []processor.Adopted
	results := make([][]Result, len(batch))
	for i, r := range batch {
		results[i] = make([]Result, len(r.events))
		for j, e := range r.events {
			k := eventKey{e.Provider, e.ExternalID}
			if row, ok := fresh[k]; ok {
				results[i][j] = Result{ID: row.id}
				delete(fresh, k) // a later copy in this batch is a duplicate of this one
				existing[k] = row.id
				if row.adopted {
					pending--
					adopted = append(adopted, processor.Adopted{ID: row.id, Provider: e.Provider, ReceivedAt: row.receivedAt,
						Payload: e.Payload, Traceparent: e.Traceparent, Lane: e.Lane})
				}
				continue
			}
			results[i][j] = Result{ID: existing[k], Duplicate: true}
		}
	}
	if reserved > 0 {
		w.handoff.Unreserve(reserved - len(adopted)) // duplicates
		w.handoff.Adopt(adopted)
	}
	return results, pending, nil
}

// storedEvents returns the batch's events that fresh says were inserted, each once
// (a later copy in the batch is a duplicate), in id order.
func storedEvents(batch []*writeReq, fresh map[eventKey]row) []Stored {
	stored := make([]Stored, 0, len(fresh))
	seen := make(map[eventKey]bool, len(fresh))
	for _, r := range batch {
		for _, e := range r.events {
			k := eventKey{e.Provider, e.ExternalID}
			if row, ok := fresh[k]; ok && !seen[k] {
				seen[k] = true
				stored = append(stored, Stored{ID: row.id, Provider: e.Provider, ReceivedAt: row.receivedAt, Payload: e.Payload})
			}
		}
	}
	slices.SortFunc(stored, func(a, b Stored) int { return cmp.Compare(a.ID, b.ID) })
	return stored
}

func collectRows(rows pgx.Rows, into map[eventKey]row) error {
	var r row
	var k eventKey
	_, err := pgx.ForEachRow(rows, []any{&r.id, &k.provider, &k.externalID, &r.receivedAt, &r.adopted}, func() error {
		into[k] = r
		return nil
	})
	return err
}

func collectIDs(rows pgx.Rows, into map[eventKey]int64) error {
	var id int64
	var k eventKey
	_, err := pgx.ForEachRow(rows, []any{&id, &k.provider, &k.externalID}, func() error {
		into[k] = id
		return nil
	})
	return err
}

// isTimeout: the server gave up on the commit at lock_timeout or statement_timeout.
func isTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "57014")
}

// classify turns a failed commit into what its requests are answered: a value
// Postgres refuses (class 22 or 54) is the request's own fault and permanent (400);
// anything else is the database's trouble (503, retry).
func classify(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case store.Unstorable(err) && errors.As(err, &pgErr):
		return fmt.Errorf("%w: %s", errUnstorable, pgErr.Message)
	case errors.Is(err, ErrUnavailable):
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// health is what /readyz learns from the committer: whether commits are failing, or
// one has been waiting for longer than half the timeout.
type health struct {
	mu        sync.Mutex
	running   []time.Time // starts of the commits in progress (one per committer at most)
	lastOK    time.Time
	lastFail  time.Time
	failure   string
	slowUntil time.Time // a request gave up waiting: stalled until then
}

// failWindow is how long a failed commit keeps inboxd unready when no commit has
// succeeded since. Without traffic nothing else would clear it.
const failWindow = 10 * time.Second

// begin records that a commit started, and returns the start to give end.
func (h *health) begin() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	start := time.Now()
	h.running = append(h.running, start)
	return start
}

// end records how the commit that began at start ended. The other committer's
// commit may still be running: only this one's start goes.
func (h *health) end(start time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.IndexFunc(h.running, start.Equal); i >= 0 {
		h.running = slices.Delete(h.running, i, i+1)
	}
	switch {
	case err == nil:
		h.lastOK, h.slowUntil = time.Now(), time.Time{}
	case store.Transient(err):
		h.lastFail, h.failure = time.Now(), err.Error()
	}
}

func (h *health) stalled() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.slowUntil = time.Now().Add(failWindow)
}

// Ready reports why webhooks cannot be stored right now, or nil: a commit has been
// running for more than half the timeout, the last commit failed for the database's
// reasons (and none succeeded since, within failWindow), or requests gave up waiting.
func (w *Writer) Ready() error {
	h := &w.health
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for _, start := range h.running {
		if now.Sub(start) > w.timeout/2 {
			return fmt.Errorf("a commit has been waiting for %s", now.Sub(start).Round(time.Millisecond))
		}
	}
	if h.lastFail.After(h.lastOK) && now.Sub(h.lastFail) < failWindow {
		return fmt.Errorf("commits are failing: %s", h.failure)
	}
	if now.Before(h.slowUntil) {
		return fmt.Errorf("webhooks gave up waiting for a commit within %s", w.timeout)
	}
	return nil
}
