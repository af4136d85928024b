package processor

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/store"
)

// ApplyEvents applies stored events for a queue other than inboxd's own: the River
// baseline of the benchmark (bench/river), whose jobs carry event ids. It does what a
// processor batch does, with the same statements: reads the events, normalizes them,
// applies them set-based and marks them processed, in one pipelined batch that commits
// as one transaction. If that batch fails on its merits, the events are applied one by
// one in savepoints (one bad event costs only itself) and an event whose payload can
// never be applied is marked dead. A transient failure (a lost connection, a timeout)
// is returned: the caller's queue retries the job, and applying again is harmless.
//
// Events already processed or dead are skipped. It writes no lease and counts no
// claim: the other queue does its own bookkeeping, and inboxd's state column only
// records the outcome (markDone in queue.go).
func ApplyEvents(ctx context.Context, pool *pgxpool.Pool, ids []int64) error {
	x := external{pool: pool, settings: settings(30 * time.Second), normalizers: DefaultNormalizers()}
	events, err := x.read(ctx, ids)
	if err != nil || len(events) == 0 {
		return err
	}
	norms, errs := make([]Normalized, len(events)), make([]error, len(events))
	var good []int
	for i, ev := range events {
		if norms[i], errs[i] = normalize(x.normalizers, ev); errs[i] == nil {
			good = append(good, i)
		}
	}
	b := x.batch()
	if err := queueApply(b, pick(events, good), pick(norms, good)); err != nil {
		return err
	}
	queueDone(b, events, errs)
	err = pool.SendBatch(ctx, b).Close()
	if err == nil || len(good) <= 1 || store.Transient(err) {
		return err
	}
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{BeginQuery: "BEGIN; " + x.settings}, func(tx pgx.Tx) error {
		for _, i := range good {
			errs[i] = applyAlone(ctx, tx, events[i], norms[i])
			if errs[i] != nil && !isPermanent(errs[i]) {
				return fmt.Errorf("apply event %d: %w", events[i].ID, errs[i])
			}
		}
		b := &pgx.Batch{}
		queueDone(b, events, errs)
		return tx.SendBatch(ctx, b).Close()
	})
}

type external struct {
	pool        *pgxpool.Pool
	settings    string
	normalizers map[string]Normalizer
}

func (x external) batch() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(x.settings)
	return b
}

// readEvents reads the events to apply (those not processed or dead yet).
const readEvents = `
SELECT id, provider, attempts, received_at, payload, state, traceparent
FROM inbound_events
WHERE id = ANY($1::bigint[]) AND state IN ('pending', 'processing')
ORDER BY id`

func (x external) read(ctx context.Context, ids []int64) ([]claimed, error) {
	b := x.batch()
	var events []claimed
	b.Queue(readEvents, ids).Query(func(rows pgx.Rows) error {
		var err error
		events, err = pgx.CollectRows(rows, pgx.RowToStructByPos[claimed])
		return err
	})
	if err := x.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read %d events: %w", len(ids), err)
	}
	return events, nil
}

// queueDone queues markDone for events: processed where errs[i] is nil, dead with
// the error where it is permanent (others stay as they are, for the job's retry).
func queueDone(b *pgx.Batch, events []claimed, errs []error) {
	var ids []int64
	var states, lastErrors []string
	for i, ev := range events {
		switch {
		case errs[i] == nil:
			ids, states, lastErrors = append(ids, ev.ID), append(states, "processed"), append(lastErrors, "")
		case isPermanent(errs[i]):
			ids, states, lastErrors = append(ids, ev.ID), append(states, "dead"), append(lastErrors, errs[i].Error())
		}
	}
	b.Queue(markDone, ids, states, lastErrors)
}
