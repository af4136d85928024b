package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"inboxd/internal/store"
)

// applyEvents is what a River job does with its event ids: what a processor batch
// does, with the same statements (processor.QueueApply). It reads the events,
// normalizes them, applies them set-based and records the outcome, in one pipelined
// batch that commits as one transaction. If that batch fails on its merits, the events
// are applied one by one in savepoints (one bad event costs only itself) and an event
// whose payload can never be applied is recorded dead. A transient failure (a lost
// connection, a timeout) is returned: River retries the job, and applying again is
// harmless.
//
// Events already processed or dead are skipped. River does its own bookkeeping (no
// lease, no claim); the outcome is written back to inbound_events (markDone) so that
// the benchmark's done-probe, which counts processed events, serves both systems, with
// the event's contact, as inboxd's finish records it: erasure and export find the
// events that made no message (statuses) by it, so the product needs it whatever
// queue carries the events.
func applyEvents(ctx context.Context, pool *pgxpool.Pool, ids []int64) error {
	events, err := readEvents(ctx, pool, ids)
	if err != nil || len(events) == 0 {
		return err
	}
	return applyRead(ctx, pool, events)
}

// applySettings are the apply transactions' settings, as inboxd's processor has them.
var applySettings = processor.TxSettings(30 * time.Second)

// applyRead is applyEvents for events in hand: the per-event job carries its event.
// An event finished already is applied again (harmlessly) and not marked again.
func applyRead(ctx context.Context, pool *pgxpool.Pool, events []event) error {
	errs := make([]error, len(events))
	contacts := make([]string, len(events))
	var good []processor.Applied
	normalizers := registry.Normalizers()
	for i, ev := range events {
		n, err := normalizers[ev.Provider](ev.Payload, ev.ReceivedAt)
		if errs[i] = err; err == nil {
			good = append(good, processor.Applied{ID: ev.ID, Provider: ev.Provider, Normalized: n})
			contacts[i] = n.Contact()
		}
	}
	b := &pgx.Batch{}
	b.Queue(applySettings)
	if err := processor.QueueApply(b, good); err != nil {
		return err
	}
	queueDone(b, events, errs, contacts)
	err := pool.SendBatch(ctx, b).Close()
	if err == nil || len(good) <= 1 || store.Transient(err) {
		return err
	}
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{BeginQuery: "BEGIN; " + applySettings}, func(tx pgx.Tx) error {
		for i, ev := range events {
			if errs[i] != nil {
				continue
			}
			n, _ := normalizers[ev.Provider](ev.Payload, ev.ReceivedAt)
			errs[i] = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				b := &pgx.Batch{}
				if err := processor.QueueApply(b, []processor.Applied{{ID: ev.ID, Provider: ev.Provider, Normalized: n}}); err != nil {
					return err
				}
				return sp.SendBatch(ctx, b).Close()
			})
			if errs[i] != nil && !isPermanent(errs[i]) {
				return fmt.Errorf("apply event %d: %w", ev.ID, errs[i])
			}
		}
		b := &pgx.Batch{}
		queueDone(b, events, errs, contacts)
		return tx.SendBatch(ctx, b).Close()
	})
}

// event is an event a job applies.
type event struct {
	ID         int64
	Provider   string
	ReceivedAt time.Time
	Payload    []byte
}

// selectEvents reads the events to apply (those not processed or dead yet).
const selectEvents = `
SELECT id, provider, received_at, payload
FROM inbound_events
WHERE id = ANY($1::bigint[]) AND state IN ('pending', 'processing')
ORDER BY id`

func readEvents(ctx context.Context, pool *pgxpool.Pool, ids []int64) ([]event, error) {
	b := &pgx.Batch{}
	b.Queue(applySettings)
	var events []event
	b.Queue(selectEvents, ids).Query(func(rows pgx.Rows) error {
		var err error
		events, err = pgx.CollectRows(rows, pgx.RowToStructByPos[event])
		return err
	})
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read %d events: %w", len(ids), err)
	}
	return events, nil
}

// markDone records what a job did with events: processed, or dead with the reason,
// and the contact where the event was read. Events already finished are left alone;
// the attempt is counted here, there being no claim.
const markDone = `
UPDATE inbound_events e
SET state        = o.state,
    attempts     = e.attempts + 1,
    processed_at = CASE WHEN o.state = 'processed' THEN clock_timestamp() END,
    last_error   = NULLIF(o.last_error, ''),
    contact      = COALESCE(NULLIF(o.contact, ''), e.contact)
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS o(id, state, last_error, contact)
WHERE e.id = o.id AND e.state IN ('pending', 'processing')`

// queueDone queues markDone for events: processed where errs[i] is nil, dead with
// the error where it is permanent (others stay as they are, for the job's retry).
// contacts[i] is event i's contact, "" where it was not read.
func queueDone(b *pgx.Batch, events []event, errs []error, contacts []string) {
	var ids []int64
	var states, lastErrors, cs []string
	for i, ev := range events {
		switch {
		case errs[i] == nil:
			ids, states, lastErrors = append(ids, ev.ID), append(states, "processed"), append(lastErrors, "")
		case isPermanent(errs[i]):
			ids, states, lastErrors = append(ids, ev.ID), append(states, "dead"), append(lastErrors, errs[i].Error())
		default:
			continue
		}
		cs = append(cs, contacts[i])
	}
	b.Queue(markDone, ids, states, lastErrors, cs)
}

// isPermanent: the normalizer said so, or Postgres refused the data itself.
func isPermanent(err error) bool {
	return errors.Is(err, provider.ErrPermanent) || store.Unstorable(err)
}
