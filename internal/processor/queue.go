package processor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/provider"
)

// This file is the queue's state machine, the one place that changes
// inbound_events.state (ingest only inserts; the API's replay and the CLI call
// Requeue here):
//
//	pending ──claim──▶ processing ──finish──▶ processed | pending (retry, backoff) | dead
//	processing ──rescue (lease expired)──▶ processing (another holder) | dead (out of attempts)
//	processing ──release (graceful stop)──▶ pending (attempt not counted)
//	processed | dead ──Requeue (replay)──▶ pending (fresh attempts)
//	pending | processing (lease expired) ──Erased (a contact's erasure)──▶ processed (a tombstone: never applied again)
//
// A holder's write is fenced: finish and release change a row only while it is still
// processing, held by this process (locked_by) for this attempt (attempts). locked_by
// stops a process whose lease was taken over by another; attempts stops a process's
// own late write after its own sweep rescued the event.

// States are the states of inbound_events.state.
var States = []string{"pending", "processing", "processed", "dead"}

// claimed is an event this process holds a lease on.
type claimed struct {
	ID         int64
	Provider   string
	Attempts   int // including the one now under way
	ReceivedAt time.Time
	Payload    []byte
	State      string // processing, or dead when a rescue found it out of attempts
	// Traceparent is the trace context of the webhook that stored it (NULL when
	// tracing was off).
	Traceparent *string
	Lane        string // inbound_events.lane
	// Visit is the lane's place in the claim's round (1 first); 0 for a rescue.
	Visit int
}

// claimDue leases due pending events, fairly across lanes (docs/lanes.md), in one
// statement and one commit:
//
//   - after and before find the lanes with due events by a loose index scan of
//     inbound_events_lanes, and where each lane's first due event is (since): one
//     index probe per lane, starting after the cursor
//     ($4, the lane after which the previous claim of this process started) and
//     wrapping around, at most $5 lanes. A claim costs the lanes it visits, not the
//     lanes there are.
//   - shares gives each lane ceil($1 * weight / total weight) of the batch; weights
//     are $6 (lanes) and $7 (their weights), 1 for any other lane.
//   - first takes each lane's share, oldest due first (order within a lane is as
//     without lanes), from since on: the index entries before it are of events
//     claimed already (dead, until vacuum or a scan removes them), and at a busy
//     lane's head there may be thousands; the probe stepped over them once. rest gives what the shares left unused (lanes with fewer due
//     events than their share) to the first lane, in the cursor's order, that filled
//     its share: a lone busy lane still fills whole batches, and the cursor moving
//     on each claim passes that bonus round.
//
// FOR UPDATE SKIP LOCKED in the per-lane subqueries lets concurrent claimers, in this
// process or others, take disjoint rows without waiting; the MATERIALIZED CTEs pin the
// LIMITs and the row locks to them (the planner may not push the UPDATE into them).
// The UPDATE finds its rows by id = ANY of the claimed ids as well as by the join:
// a generic plan made while inbound_events looked one row long otherwise walked the
// whole primary key for each claim (plans_test.go).
// The attempt is counted here, in the claim's own commit, so that an event that kills
// its process still uses up attempts (see Processor's doc comment). run_at becomes the
// end of the lease: the rescue finds expired leases by inbound_events_leases. The
// batch may exceed $1 by fewer events than it has lanes (shares are rounded up).
const claimDue = `
WITH RECURSIVE after AS (
    (SELECT lane, run_at AS since, 1 AS n FROM inbound_events
     WHERE state = 'pending' AND run_at <= now() AND lane > $4::text
     ORDER BY lane, run_at LIMIT 1)
    UNION ALL
    SELECT nxt.lane, nxt.run_at, a.n + 1
    FROM after a
    CROSS JOIN LATERAL (
        SELECT lane, run_at FROM inbound_events
        WHERE state = 'pending' AND run_at <= now() AND lane > a.lane
        ORDER BY lane, run_at LIMIT 1
    ) nxt
    WHERE a.n < $5::int
),
before AS (
    (SELECT lane, run_at AS since, (SELECT count(*) FROM after)::int + 1 AS n FROM inbound_events
     WHERE state = 'pending' AND run_at <= now() AND lane <= $4::text
     ORDER BY lane, run_at LIMIT 1)
    UNION ALL
    SELECT nxt.lane, nxt.run_at, b.n + 1
    FROM before b
    CROSS JOIN LATERAL (
        SELECT lane, run_at FROM inbound_events
        WHERE state = 'pending' AND run_at <= now() AND lane > b.lane AND lane <= $4::text
        ORDER BY lane, run_at LIMIT 1
    ) nxt
    WHERE b.n < $5::int
),
lanes AS (
    SELECT lane, since, n FROM after
    UNION ALL
    SELECT lane, since, n FROM before WHERE n <= $5::int
),
shares AS (
    SELECT l.lane, l.since, l.n,
           ceil($1::int * COALESCE(w.weight, 1)::numeric / sum(COALESCE(w.weight, 1)) OVER ())::int AS share
    FROM lanes l
    LEFT JOIN unnest($6::text[], $7::int[]) AS w(lane, weight) ON w.lane = l.lane
),
first AS MATERIALIZED (
    SELECT s.lane, s.n, s.share, e.id, e.run_at
    FROM shares s
    CROSS JOIN LATERAL (
        SELECT id, run_at FROM inbound_events
        WHERE state = 'pending' AND lane = s.lane AND run_at >= s.since AND run_at <= now()
        ORDER BY run_at
        LIMIT s.share
        FOR UPDATE SKIP LOCKED
    ) e
),
filled AS (
    SELECT lane, n, array_agg(id) AS ids, max(run_at) AS since FROM first
    GROUP BY lane, n, share
    HAVING count(*) = share
    ORDER BY n
    LIMIT 1
),
rest AS MATERIALIZED (
    SELECT f.lane, f.n, e.id
    FROM filled f
    CROSS JOIN LATERAL (
        SELECT id FROM inbound_events
        WHERE state = 'pending' AND lane = f.lane AND run_at >= f.since AND run_at <= now() AND id <> ALL (f.ids)
        ORDER BY run_at
        LIMIT GREATEST($1::int - (SELECT count(*) FROM first), 0)
        FOR UPDATE SKIP LOCKED
    ) e
),
due AS (
    SELECT id, n FROM first
    UNION ALL
    SELECT id, n FROM rest
)
UPDATE inbound_events e
SET state = 'processing',
    attempts = e.attempts + 1,
    run_at = now() + $2 * interval '1 millisecond',
    locked_until = now() + $2 * interval '1 millisecond',
    locked_by = $3
FROM due
WHERE e.id = due.id AND e.id = ANY (ARRAY(SELECT id FROM due))
RETURNING e.id, e.provider, e.attempts, e.received_at, e.payload, e.state, e.traceparent, e.lane, due.n`

// claim leases up to about limit due events, fairly across lanes, and moves this
// process's lane cursor on.
func (p *Processor) claim(ctx context.Context, limit int) ([]claimed, error) {
	cursor := p.lanes.cursor()
	events, err := p.queryClaimed(ctx, claimDue, limit, p.cfg.Lease.Milliseconds(), p.cfg.ID,
		cursor, p.lanes.visit(limit), p.lanes.names, p.lanes.weights)
	if err != nil {
		return nil, fmt.Errorf("claim due events: %w", err)
	}
	p.lanes.advance(cursor, events, limit)
	return events, nil
}

// rescueExpired takes over one event whose lease ran out: its process died, or hung
// past INBOX_LEASE. It takes one at a time because such an event may be what killed
// that process: handled alone, it can only take itself down. An event already at
// $3 attempts is not tried again but declared dead, which ends any crash loop.
const rescueExpired = `
WITH expired AS MATERIALIZED (
    SELECT id FROM inbound_events
    WHERE state = 'processing' AND run_at <= now()
    ORDER BY run_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
verdict AS (
    SELECT e.id, e.attempts >= $3 AS out_of_attempts
    FROM inbound_events e
    WHERE e.id = (SELECT id FROM expired)
)
UPDATE inbound_events e
SET state        = CASE WHEN v.out_of_attempts THEN 'dead' ELSE 'processing' END,
    attempts     = CASE WHEN v.out_of_attempts THEN e.attempts ELSE e.attempts + 1 END,
    last_error   = format('lease of %s expired during attempt %s of %s: the process stopped (crash, kill or hang) before finishing',
                          e.locked_by, e.attempts, $3::int),
    errors       = inbox_append_error(e.errors, jsonb_build_object('attempt', e.attempts, 'at', now(),
                          'error', format('lease of %s expired: the process stopped (crash, kill or hang) before finishing', e.locked_by)), 20),
    run_at       = now() + $1 * interval '1 millisecond',
    locked_until = CASE WHEN v.out_of_attempts THEN NULL ELSE now() + $1 * interval '1 millisecond' END,
    locked_by    = CASE WHEN v.out_of_attempts THEN NULL ELSE $2 END
FROM verdict v
WHERE e.id = v.id
RETURNING e.id, e.provider, e.attempts, e.received_at, e.payload, e.state, e.traceparent, e.lane, 0`

func (p *Processor) rescue(ctx context.Context) ([]claimed, error) {
	events, err := p.queryClaimed(ctx, rescueExpired, p.cfg.Lease.Milliseconds(), p.cfg.ID, p.cfg.MaxAttempts)
	if err != nil {
		return nil, fmt.Errorf("rescue expired lease: %w", err)
	}
	return events, nil
}

// outcome is what one attempt decided for an event.
type outcome struct {
	id       int64
	attempts int
	state    string        // processed, pending (retry) or dead
	delay    time.Duration // for pending: the backoff
	err      string        // last_error, empty when processed
	// contact is the event's contact, when it was read (inbound_events.contact). It is
	// recorded whatever the state, a retry's too: an export finds the event by it
	// while it waits for its next attempt (an erasure leaves unfinished events alone).
	contact string
}

// finish records outcomes, inside the transaction that applied the events, so that an
// event is marked processed exactly when its messages are committed. Only rows still
// leased by this process for this attempt change (the fence above): if the lease
// expired and another process took the event over, that process's verdict stands
// (and since applying is idempotent, both having applied it leaves the same rows).
// It returns the ids it changed: only those are counted and logged.
const finish = `
UPDATE inbound_events e
SET state        = o.state,
    run_at       = CASE WHEN o.state = 'pending' THEN now() + o.delay_ms * interval '1 millisecond' ELSE e.run_at END,
    last_error   = COALESCE(o.last_error, e.last_error),
    errors       = CASE WHEN o.last_error IS NULL THEN e.errors
                        ELSE inbox_append_error(e.errors, jsonb_build_object('attempt', o.attempts, 'at', clock_timestamp(), 'error', o.last_error), 20) END,
    processed_at = CASE WHEN o.state = 'processed' THEN clock_timestamp() END,
    locked_until = NULL,
    locked_by    = NULL,
    contact      = COALESCE(o.contact, e.contact)
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[], $5::text[], $7::text[])
     AS o(id, attempts, state, delay_ms, last_error, contact)
WHERE e.id = ANY ($1::bigint[]) AND e.id = o.id AND e.attempts = o.attempts AND e.state = $8::text AND e.locked_by = $6
RETURNING e.id`

// finishArgs lays outcomes out as the columns finish takes.
func (p *Processor) finishArgs(outs []outcome) []any {
	n := len(outs)
	ids, attempts, states, delays := make([]int64, n), make([]int32, n), make([]string, n), make([]int64, n)
	errs, contacts := make([]*string, n), make([]*string, n)
	for i, o := range outs {
		ids[i], attempts[i], states[i], delays[i] = o.id, int32(o.attempts), o.state, o.delay.Milliseconds()
		if o.err != "" {
			errs[i] = &o.err
		}
		if o.contact != "" {
			contacts[i] = &o.contact
		}
	}
	return []any{ids, attempts, states, delays, errs, p.cfg.ID, contacts, held}
}

// held is the state a fenced write expects its rows in, passed as a parameter: with
// the literal 'processing' in the statement, a generic plan may read its rows through
// inbound_events_leases (its predicate is state = 'processing'), and one made while
// the table looked empty does, reading every entry of that index, live or dead, on
// each write: at 5,000 events a second on a server without autovacuum, 24,000 entries
// a finish (docs/benchmarks.md). With a parameter the plan can only find the rows by
// primary key (plans_test.go).
const held = "processing"

// release hands unfinished claims back without counting the attempt: used at graceful
// stop, when this process chose not to finish them.
const release = `
UPDATE inbound_events
SET state = 'pending', attempts = attempts - 1, run_at = now(), locked_until = NULL, locked_by = NULL
WHERE id = ANY($1::bigint[]) AND state = $3::text AND locked_by = $2`

func (p *Processor) release(ctx context.Context, events []claimed) error {
	ids := make([]int64, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	b := p.batch()
	b.Queue(release, ids, p.cfg.ID, held)
	if err := p.send(ctx, b); err != nil {
		return fmt.Errorf("release %d claims: %w", len(ids), err)
	}
	return nil
}

// QueueState is one row of the inbox_queue_stats view (migrations/006): how many
// events are in a state and how old the oldest is. Count is exact for pending,
// processing and dead; for processed it is an estimate once the table is large
// (Exact says which).
type QueueState struct {
	State     string
	Count     int64
	OldestAge time.Duration // 0 when the state is empty
	Exact     bool
}

// ReadQueue reads inbox_queue_stats, one row per state, in the order pending,
// processing, dead, processed.
func ReadQueue(ctx context.Context, pool *pgxpool.Pool) ([]QueueState, error) {
	rows, err := pool.Query(ctx, "SELECT state, count, COALESCE(extract(epoch FROM oldest_age), 0)::float8, exact FROM inbox_queue_stats")
	if err != nil {
		return nil, fmt.Errorf("read inbox_queue_stats: %w", err)
	}
	var out []QueueState
	var q QueueState
	var age float64
	_, err = pgx.ForEachRow(rows, []any{&q.State, &q.Count, &age, &q.Exact}, func() error {
		q.OldestAge = time.Duration(age * float64(time.Second))
		out = append(out, q)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read inbox_queue_stats: %w", err)
	}
	return out, nil
}

// updateQueueDepth samples the queue into the depth and oldest-age gauges.
func (p *Processor) updateQueueDepth(ctx context.Context) error {
	states, err := ReadQueue(ctx, p.pool)
	if err != nil {
		return err
	}
	for _, q := range states {
		if q.State != "processed" { // the history is not a depth
			p.metrics.queueDepth.WithLabelValues(q.State).Set(float64(q.Count))
		}
		p.metrics.oldestAge.WithLabelValues(q.State).Set(q.OldestAge.Seconds())
	}
	return nil
}

// Parameters carry explicit casts throughout the processor's SQL: with
// default_query_exec_mode=simple_protocol (a choice behind a pooler) pgx writes them
// into the statement as untyped literals, and a function like unnest() cannot tell an
// untyped literal's type.

// requeued puts finished events (dead or processed) back to pending with a fresh set
// of attempts, and announces each on the inbound_events channel so that processors
// wake at once (an UPDATE does not fire the insert trigger). It follows a CTE named
// picked, which chooses the events and locks them. Events that are pending or
// processing are left alone: replaying twice changes nothing more than once. An
// erased event (a tombstone) is never replayed.
// Normalization is idempotent, so replaying a processed event rewrites nothing that
// exists; it re-runs what failed.
const requeued = `
requeued AS (
    UPDATE inbound_events e
    SET state = 'pending', attempts = 0, run_at = now(), locked_until = NULL, locked_by = NULL, processed_at = NULL
    FROM picked
    WHERE e.id = picked.id AND e.state IN ('dead', 'processed') AND e.erased_at IS NULL
    RETURNING e.id, e.provider
)
SELECT count(pg_notify('inbound_events', inbox_notification(id, provider)))
FROM requeued`

// Erased is a CTE named erased, for a contact's erasure (internal/privacy), that
// follows a CTE named picked: it empties the payloads and headers of the picked
// events, keeping the rows as tombstones (erased_at), and returns their ids. A
// finished event keeps its state. One still in the queue (a retry waiting, or a
// replayed event: its contact is known from an earlier read) leaves it as processed,
// so that what is erased is never applied again: a pending one, which no processor
// holds (a claim takes pending rows under SKIP LOCKED, so the two never meet), and a
// processing one whose lease has run out, which nobody holds either (its holder's
// work ended at three quarters of the lease; a rescue would take it over). An event
// being processed under a live lease is left alone: its holder has the payload, and
// the erasure waits for its verdict.
const Erased = `
erased AS (
    UPDATE inbound_events e
    SET payload = '{}', headers = '{}', contact = NULL, erased_at = now(),
        state = CASE WHEN e.state IN ('pending', 'processing') THEN 'processed' ELSE e.state END,
        processed_at = CASE WHEN e.state IN ('pending', 'processing') THEN now() ELSE e.processed_at END,
        locked_until = NULL, locked_by = NULL
    FROM picked
    WHERE e.id = picked.id AND e.erased_at IS NULL AND ` + Unheld + `
    RETURNING e.id
)`

// Unheld is the SQL condition, on a row of inbound_events named e, that no processor
// holds the event: it is not being processed, or its lease has run out (its holder's
// work stopped at three quarters of the lease; a rescue may take it over).
const Unheld = `(e.state <> 'processing' OR e.locked_until < now())`

// requeueIDs requeues the events $1. They are one statement of their own, not a
// branch of requeueState's: as `id = ANY($1) OR (state = …)` under ORDER BY id
// LIMIT, the generic plan walked the whole primary key in order, filtering, until it
// had found as many events as it was given (plans_test.go).
const requeueIDs = `
WITH picked AS (
    SELECT id FROM inbound_events
    WHERE id = ANY($1::bigint[])
    ORDER BY id
    FOR UPDATE SKIP LOCKED
),` + requeued

// requeueState returns the statement that requeues up to $2 events in state (of
// provider $1 unless it is empty), oldest first. The state is written into the
// statement, not bound, so that every plan of it, generic ones included, reads dead
// events through their partial index rather than the whole table in id order.
func requeueState(state string) string {
	return `
WITH picked AS (
    SELECT id FROM inbound_events
    WHERE state = '` + state + `' AND ($1::text = '' OR ` + provider.MatchSQL("provider", "$1::text") + `)
    ORDER BY id
    LIMIT $2::int
    FOR UPDATE SKIP LOCKED
),` + requeued
}

// ReplayableStates are the states an operator may replay: finished events. Pending
// and processing ones are on their way already; replaying them would change nothing.
var ReplayableStates = []string{"dead", "processed"}

// requeueStates holds requeueState's statement for each of ReplayableStates.
var requeueStates = func() map[string]string {
	m := map[string]string{}
	for _, s := range ReplayableStates {
		m[s] = requeueState(s)
	}
	return m
}()

// Querier runs a statement on a pool or in a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Requeue replays the given events (those dead or processed; others are left alone)
// and returns how many it requeued. On a transaction (a bulk replay's batch), the
// requeue commits with whatever else the transaction records.
func Requeue(ctx context.Context, q Querier, ids []int64) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, requeueIDs, ids).Scan(&n); err != nil {
		return 0, fmt.Errorf("requeue %d events: %w", len(ids), err)
	}
	return n, nil
}

// RequeueState replays up to limit events in state (one of ReplayableStates), of
// provider if it is not empty, oldest first, and returns how many it requeued.
// Callers validate the filter (readmodel.ReplayFilter).
func RequeueState(ctx context.Context, pool *pgxpool.Pool, state, provider string, limit int) (int64, error) {
	var n int64
	sql, ok := requeueStates[state]
	if !ok {
		return 0, fmt.Errorf("requeue %q events: only %s events can be replayed", state, strings.Join(ReplayableStates, " or "))
	}
	if err := pool.QueryRow(ctx, sql, provider, limit).Scan(&n); err != nil {
		return 0, fmt.Errorf("requeue %s events: %w", state, err)
	}
	return n, nil
}
