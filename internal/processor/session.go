package processor

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/store"
)

// The processor's statements run with settings of their own (see settings), and
// nothing of them outlives the transaction that needs them, so that the processor
// works through a transaction-mode pooler (PgBouncer), where consecutive transactions
// of one client may run on different server connections and a session's settings
// would leak to other clients.
//
// Most work is one pipelined batch: the settings first, then the work, sent together
// and committed at the batch's end (its Sync) as one implicit transaction (an error
// anywhere rolls back all of it). That is one round trip for a claim, and one for an
// apply with its outcomes, where an explicit BEGIN and COMMIT would add two. Only the
// fallback that applies events one by one in savepoints, and retention, need an
// explicit transaction, which begins with the same settings.
//
// The settings are one statement (store.SetLocal).

// settings returns the statement that sets the processor's transaction settings:
//   - synchronous_commit off. Durability is owed at ingest, before the 200; what the
//     processor writes is derived from the durable event and applying it is
//     idempotent. If Postgres itself crashes, the last fraction of a second of claims
//     and outcomes may be lost and those events simply run again. Not waiting for
//     the WAL flush takes the processor's commits off the disk's critical path, which
//     ingest's commits (and their NOTIFY lock) need.
//   - enable_seqscan off. Every processor statement is an index lookup by design
//     (claims through inbound_events_lanes, outcomes by id, messages and conversations by
//     their unique keys), but a queue table's statistics are always stale: right
//     after a deployment, a TRUNCATE or a burst, the planner believes the tables tiny
//     and joins a batch's unnest() to a sequential scan, a cost that grows with every
//     row. The setting only penalizes sequential scans; it forbids nothing.
//   - enable_hashjoin and enable_mergejoin off. The same stale statistics make the
//     planner join a batch's arrays to a table it believes tiny by reading the whole
//     of one of its indexes (a merge join over conversations_key, a hash join over
//     pending_statuses): cheap while the table is empty, and once cached in a generic
//     plan (below), a cost that grows with the table. A backlog drain fell from
//     about 5,000 to under 1,000 events a second on plans made during a warm-up on a
//     fresh database. Every join of the processor's is a lookup by key, per element
//     of the arrays: a nested loop over index scans, which these leave as the only
//     plan that is not penalized. A nested loop can still be turned round (the
//     table's whole index outside, the batch inside), so the statements also pin the
//     lookup's side (apply.go, queue.go).
//   - jit off. With sequential scans penalized, any plan that still needs one (a
//     trigger's join on a small table) is costed in the billions, far past
//     jit_above_cost, and JIT compilation then costs 100 ms a statement. The
//     processor's statements are short index lookups: JIT never pays for them.
//   - plan_cache_mode force_generic_plan. The statements are prepared (pgx's statement
//     cache) and their parameters are arrays, whose size the planner cannot see in a
//     generic plan; under the default (auto) it kept choosing a custom plan, so every
//     execution was planned afresh: the apply statements spent four times as long in
//     the planner as in execution (docs/benchmarks.md). Their plans do not depend on
//     the values (index lookups by key, per element of the arrays; plans_test.go
//     checks them).
//   - statement_timeout and idle_in_transaction_session_timeout at the lease: a
//     statement its process gave up on (process bounds the work by three quarters of
//     the lease), or a transaction left open by a hung process, must not hold its row
//     locks or its backend for ever.
func settings(lease time.Duration) string {
	ms := strconv.FormatInt(lease.Milliseconds(), 10)
	return store.SetLocal(append([]string{
		"synchronous_commit", "off",
		"statement_timeout", ms,
		"idle_in_transaction_session_timeout", ms,
	}, planSettings...)...)
}

// planSettings are the settings of settings that shape plans (plans_test.go plans
// with them).
var planSettings = []string{
	"enable_seqscan", "off",
	"enable_hashjoin", "off",
	"enable_mergejoin", "off",
	"jit", "off",
	"plan_cache_mode", "force_generic_plan",
}

// TxSettings is the statement that gives a transaction the processor's settings
// with the lease as its timeouts (for QueueApply's callers).
func TxSettings(lease time.Duration) string { return settings(lease) }

// batch returns a batch that starts with the processor's settings.
func (p *Processor) batch() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(p.settings)
	return b
}

// begin is the explicit transaction's BEGIN, with the settings.
func (p *Processor) begin() pgx.TxOptions {
	return pgx.TxOptions{BeginQuery: "BEGIN; " + p.settings}
}

// send runs b (from p.batch) as one implicit transaction and returns its error.
func (p *Processor) send(ctx context.Context, b *pgx.Batch) error {
	return p.pool.SendBatch(ctx, b).Close()
}

// queryClaimed runs a statement that returns claimed rows, in its own transaction
// with the settings.
func (p *Processor) queryClaimed(ctx context.Context, sql string, args ...any) ([]claimed, error) {
	b := p.batch()
	var events []claimed
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		var err error
		events, err = pgx.CollectRows(rows, pgx.RowToStructByPos[claimed])
		return err
	})
	return events, p.send(ctx, b)
}
