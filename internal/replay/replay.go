// Package replay runs bulk replays: every finished event an operator's filter
// selects (readmodel.EventFilter), requeued as a background job after a confirmation,
// at a capped rate, with its progress recorded and a cancel that takes effect before
// the next batch. It owns the replays table (migration 014); the requeue itself is the
// processor's (processor.Requeue), in the same transaction as the job's progress, so
// that a job resumed after a crash neither skips nor repeats an event.
//
// Order. Events are replayed oldest first, in batches. A batch holds at most one
// event per contact (it ends before the second), and the next batch waits until each
// event of the last one has been attempted, so a contact's events are applied in
// the order they were received, as the first time. (An event that fails again is
// retried on its own schedule, as any retry is.) A replay is not a flood: a batch
// waits for the one before it, so it never puts more than one batch ahead of live
// traffic in the queue.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/processor"
	"inboxd/internal/readmodel"
)

// Limits of a job.
const (
	MaxEvents   = 100000 // the most events one job replays
	DefaultRate = 200    // events a second
	MaxRate     = 5000
	maxBatch    = 500
)

// ErrBadRequest wraps every reason a job is refused; ErrNotFound: no such job.
var (
	ErrBadRequest = errors.New("bad request")
	ErrNotFound   = errors.New("no such replay")
)

// Job is a bulk replay as operators see it.
type Job struct {
	ID          int64
	Filter      readmodel.EventFilter // the enumerated parts; the personal ones are not shown
	Private     bool                  // the filter had a contact, text, path or error (kept only while it runs)
	Rate        int
	UpTo        int64 // the newest event id when it was confirmed: later events are not in it
	Total       int64 // the count the operator confirmed
	Cursor      int64 // every selected event up to this id has been requeued
	Requeued    int64
	State       string // running, done, cancelled
	RequestedBy string
	RequestedAt time.Time
	FinishedAt  *time.Time
	// Waiting counts the events of the last batch not yet attempted: the next batch
	// waits for them.
	Waiting int64
}

// stored is a job's filter as the filter column holds it: its enumerated parts, and
// whether it had personal ones (which the private column holds while it runs).
type stored struct {
	readmodel.EventFilter
	Private bool `json:"private,omitempty"`
}

// private is the personal part of a job's filter, kept while it runs.
type private struct {
	Contacts []string `json:"contacts,omitempty"`
	Text     string   `json:"text,omitempty"`
	Path     string   `json:"path,omitempty"`
	Error    *string  `json:"error,omitempty"` // set: the last error must be this
}

// Check refuses a filter a bulk replay cannot take: only finished events (dead or
// processed) are replayed.
func Check(f readmodel.EventFilter) error {
	if !slices.Contains(readmodel.ReplayableStates, f.State) {
		return fmt.Errorf("%w: a bulk replay takes dead or processed events: choose one of those states in the filter", ErrBadRequest)
	}
	f.Limit = 1
	return f.Validate()
}

// Start records a job the operator confirmed: f's events up to upTo, total of them
// by the confirmation's count, at rate events a second. A runner (Runner.Work, in
// any process) picks it up.
func Start(ctx context.Context, pool *pgxpool.Pool, f readmodel.EventFilter, upTo, total int64, rate int, by string) (int64, error) {
	if err := Check(f); err != nil {
		return 0, err
	}
	if rate < 1 || rate > MaxRate {
		return 0, fmt.Errorf("%w: the rate is from 1 to %d events a second, got %d", ErrBadRequest, MaxRate, rate)
	}
	if total > MaxEvents {
		return 0, fmt.Errorf("%w: a bulk replay takes at most %d events and this filter matches more: narrow it (a time range, a provider)", ErrBadRequest, MaxEvents)
	}
	if total < 1 {
		return 0, fmt.Errorf("%w: the filter matches no event", ErrBadRequest)
	}
	var priv []byte
	var err error
	p := private{Contacts: f.Contacts, Text: f.Text, Path: f.Path}
	if f.HasError {
		p.Error = &f.Error
	}
	hasPrivate := len(p.Contacts) > 0 || p.Text != "" || p.Path != "" || p.Error != nil
	if hasPrivate {
		if priv, err = json.Marshal(p); err != nil {
			return 0, fmt.Errorf("start a replay: %w", err)
		}
	}
	pub, err := json.Marshal(stored{EventFilter: f, Private: hasPrivate})
	if err != nil {
		return 0, fmt.Errorf("start a replay: %w", err)
	}
	var id int64
	err = pool.QueryRow(ctx, `
INSERT INTO replays (filter, private, rate, up_to, total, requested_by)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, pub, priv, rate, upTo, total, by).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("start a replay: %w", err)
	}
	return id, nil
}

// Cancel stops a running job before its next batch (what it requeued stays
// requeued) and forgets its filter's personal part. It reports whether the job was
// running.
func Cancel(ctx context.Context, pool *pgxpool.Pool, id int64) (bool, error) {
	tag, err := pool.Exec(ctx, `
UPDATE replays SET state = 'cancelled', private = NULL, finished_at = now(), last_batch = '{}'
WHERE id = $1 AND state = 'running'`, id)
	if err != nil {
		return false, fmt.Errorf("cancel replay %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

const jobColumns = `id, filter, rate, up_to, total, cursor, requeued, state, requested_by, requested_at, finished_at,
    (SELECT ` + countUnattempted + ` FROM inbound_events e WHERE e.id = ANY(r.last_batch))`

// countUnattempted counts the events of a batch that have not been attempted since
// they were requeued (requeue sets attempts to 0; a claim counts the attempt). The
// states are tested in the aggregate's FILTER, not in WHERE, so that the rows are
// found by id only: in WHERE, they match the predicates of the queue's partial
// indexes, and the planner read a batch's few events through a bitmap of both whole
// indexes, every pending and processing event (and their dead entries) on every poll
// while a replay's batch was waiting (plans_test.go).
const countUnattempted = `count(*) FILTER (WHERE e.state = 'processing' OR (e.state = 'pending' AND e.attempts = 0))`

func scanJob(row pgx.Row) (Job, error) {
	var j Job
	var filter []byte
	err := row.Scan(&j.ID, &filter, &j.Rate, &j.UpTo, &j.Total, &j.Cursor, &j.Requeued, &j.State,
		&j.RequestedBy, &j.RequestedAt, &j.FinishedAt, &j.Waiting)
	if err != nil {
		return Job{}, err
	}
	var st stored
	if err := json.Unmarshal(filter, &st); err != nil {
		return Job{}, fmt.Errorf("replay %d's filter: %w", j.ID, err)
	}
	j.Filter, j.Private = st.EventFilter, st.Private
	return j, nil
}

// Get returns one job.
func Get(ctx context.Context, pool *pgxpool.Pool, id int64) (Job, error) {
	j, err := scanJob(pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM replays r WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("replay %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("replay %d: %w", id, err)
	}
	return j, nil
}

// List returns the newest jobs.
func List(ctx context.Context, pool *pgxpool.Pool, limit int) ([]Job, error) {
	rows, err := pool.Query(ctx, `SELECT `+jobColumns+` FROM replays r ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list replays: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list replays: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list replays: %w", err)
	}
	return out, nil
}

// Runner runs jobs.
type Runner struct {
	pool *pgxpool.Pool
	log  *zap.Logger
	id   string // this process's name in locked_by
	wake chan struct{}
	// poll is how often a waiting batch is checked.
	poll time.Duration
}

// NewRunner returns a runner that holds jobs under the process name id.
func NewRunner(pool *pgxpool.Pool, log *zap.Logger, id string) *Runner {
	return &Runner{pool: pool, log: log, id: id, wake: make(chan struct{}, 1), poll: 20 * time.Millisecond}
}

// Wake makes Work look for jobs now (one was just started).
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// lease is how long a runner holds a job between batches; another process resumes
// it once the lease runs out (the runner died).
const lease = 30 * time.Second

// Work runs jobs until ctx ends: as soon as one is started here (Wake), and any
// other process left unfinished every poll.
func (r *Runner) Work(ctx context.Context, poll time.Duration) {
	processor.RunJobs(ctx, poll, r.wake, r.RunNext, func(err error) {
		r.log.Error("replay failed; it will be resumed", zap.Error(err))
	})
}

// RunNext claims one running job whose lease is free and runs it until it ends (done
// or cancelled). It reports whether there was one.
func (r *Runner) RunNext(ctx context.Context) (bool, error) {
	var id int64
	var pub []byte
	var priv []byte
	var rate int
	var upTo, cursor int64
	var last []int64
	err := r.pool.QueryRow(ctx, `
UPDATE replays SET locked_by = $1, locked_until = now() + $2::bigint * interval '1 millisecond'
WHERE id = (SELECT id FROM replays
            WHERE state = 'running' AND (locked_until IS NULL OR locked_until < now())
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, filter, private, rate, up_to, cursor, last_batch`, r.id, lease.Milliseconds()).Scan(&id, &pub, &priv, &rate, &upTo, &cursor, &last)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim a replay: %w", err)
	}
	var f readmodel.EventFilter
	var p private
	if err := json.Unmarshal(pub, &f); err != nil {
		return true, fmt.Errorf("replay %d's filter: %w", id, err)
	}
	if priv != nil {
		if err := json.Unmarshal(priv, &p); err != nil {
			return true, fmt.Errorf("replay %d's filter: %w", id, err)
		}
	}
	f.Contacts, f.Text, f.Path = p.Contacts, p.Text, p.Path
	if p.Error != nil {
		f.Error, f.HasError = *p.Error, true
	}
	f.Before, f.Limit = upTo+1, 1
	if err := f.Resolve(ctx, r.pool); err != nil {
		return true, fmt.Errorf("replay %d: %w", id, err)
	}
	return true, r.run(ctx, id, f, rate, cursor, last)
}

// errLost: the job was cancelled, or its lease taken over by another runner.
var errLost = errors.New("cancelled or taken over")

// run replays batch after batch from cursor, at most rate events a second.
func (r *Runner) run(ctx context.Context, id int64, f readmodel.EventFilter, rate int, cursor int64, last []int64) error {
	start := time.Now()
	var requeued int64
	batch := min(max(rate/10, 1), maxBatch) // ten batches a second at the full rate
	for {
		if err := r.await(ctx, id, last); err != nil {
			return r.ended(id, requeued, start, err)
		}
		f.After, f.Limit = cursor, batch
		ids, contacts, scanned, err := readmodel.Candidates(ctx, r.pool, f)
		if err != nil {
			return fmt.Errorf("replay %d: %w", id, err)
		}
		if len(ids) == 0 && scanned == 0 {
			return r.ended(id, requeued, start, r.finish(ctx, id))
		}
		take := oneContactEach(contacts)
		next := scanned
		if take < len(ids) {
			next = ids[take-1]
		}
		n, err := r.step(ctx, id, ids[:take], next)
		if err != nil {
			return r.ended(id, requeued, start, err)
		}
		requeued += n
		cursor, last = next, ids[:take]
		// The rate cap: the events requeued so far take at least this long.
		if !processor.Sleep(ctx, time.Until(start.Add(time.Duration(float64(requeued)/float64(rate)*float64(time.Second))))) {
			return nil
		}
	}
}

// ended logs how a run ended and returns what the caller should: nothing when the
// job was cancelled or taken over.
func (r *Runner) ended(id, requeued int64, start time.Time, err error) error {
	switch {
	case err == nil:
		r.log.Info("replay done", zap.Int64("replay_id", id), zap.Int64("requeued", requeued), zap.Duration("took", time.Since(start)))
		return nil
	case errors.Is(err, errLost):
		r.log.Info("replay stopped: cancelled or taken over", zap.Int64("replay_id", id), zap.Int64("requeued", requeued))
		return nil
	default:
		return fmt.Errorf("replay %d: %w", id, err)
	}
}

// oneContactEach returns how many of a batch's events, from the first, have no
// contact in common: the batch ends before a contact's second event. An event whose
// contact is unknown (its payload was never read) is on its own.
func oneContactEach(contacts []*string) int {
	seen := map[string]bool{}
	for i, c := range contacts {
		if c == nil {
			continue
		}
		if seen[*c] {
			return i
		}
		seen[*c] = true
	}
	return len(contacts)
}

// awaitBatch counts the events of the batch $1 not yet attempted.
const awaitBatch = `SELECT ` + countUnattempted + ` FROM inbound_events e WHERE e.id = ANY($1::bigint[])`

// await waits until every event of the last batch has been attempted, renewing the
// lease (and noticing a cancel) as it waits.
func (r *Runner) await(ctx context.Context, id int64, last []int64) error {
	renewed := time.Now()
	for len(last) > 0 {
		var n int64
		if err := r.pool.QueryRow(ctx, awaitBatch, last).Scan(&n); err != nil {
			return fmt.Errorf("wait for the last batch: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Since(renewed) > lease/3 {
			if err := r.renew(ctx, r.pool, id); err != nil {
				return err
			}
			renewed = time.Now()
		}
		if !processor.Sleep(ctx, r.poll) {
			return ctx.Err()
		}
	}
	return nil
}

// renew extends the lease while the job is still this runner's and running: the
// lease's fence. On a transaction it also locks the job until the transaction ends.
func (r *Runner) renew(ctx context.Context, q processor.Querier, id int64) error {
	var held bool
	err := q.QueryRow(ctx, `
UPDATE replays SET locked_until = now() + $3::bigint * interval '1 millisecond'
WHERE id = $1 AND locked_by = $2 AND state = 'running'
RETURNING true`, id, r.id, lease.Milliseconds()).Scan(&held)
	if errors.Is(err, pgx.ErrNoRows) {
		return errLost
	}
	if err != nil {
		return fmt.Errorf("renew the lease: %w", err)
	}
	return nil
}

// step requeues a batch and records the progress in one transaction, fenced by the
// lease: when the job is no longer this runner's (cancelled, or taken over after a
// stall) it changes nothing. The fence comes first, and locks the job: Requeue skips
// events another transaction holds, so a runner that took the job over while this
// one held its batch (stalled between the events and a fence at the end) would skip
// that batch, which this transaction's rollback would then leave out of the replay.
// A batch may be empty: a payload condition's window that matched nothing moves the
// cursor past it.
func (r *Runner) step(ctx context.Context, id int64, ids []int64, cursor int64) (n int64, err error) {
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := r.renew(ctx, tx, id); err != nil {
			return err
		}
		if n, err = processor.Requeue(ctx, tx, ids); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
UPDATE replays SET cursor = $2, last_batch = COALESCE($3::bigint[], '{}'), requeued = requeued + $4
WHERE id = $1`, id, cursor, ids, n); err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		return nil
	})
	return n, err
}

// finish marks the job done and forgets its filter's personal part.
func (r *Runner) finish(ctx context.Context, id int64) error {
	tag, err := r.pool.Exec(ctx, `
UPDATE replays SET state = 'done', private = NULL, finished_at = now(), last_batch = '{}'
WHERE id = $1 AND locked_by = $2 AND state = 'running'`, id, r.id)
	if err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errLost
	}
	return nil
}
