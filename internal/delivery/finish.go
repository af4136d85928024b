package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Outcomes are recorded in batches, as the processor records its events' outcomes:
// one finisher takes the outcome that arrived first and every other one waiting
// (up to finishBatch), and records them in one implicit transaction. Under load,
// outcomes pile up while a batch is written, so a transaction carries many of them;
// alone, an outcome is written at once. A delivery's slot is freed when its outcome
// is recorded.

// finishBatch is the most outcomes one transaction records.
const finishBatch = 128

// attempt is one delivery's attempt and what it got.
type attempt struct {
	c claimed
	r result
}

// finishAttempts records attempts' outcomes ($1 ids, $2 attempts, $3 errors (NULL:
// delivered), $4 worth a retry, $5 delays in ms, $6 statuses), each fenced by lease
// (state $9, holder $7, attempt): delivered, pending again after its delay, or dead (not
// worth a retry, or the next attempt would come after the give-up time $8 ms from
// since). For each (subscription, conversation) whose delivery is done (delivered or
// dead), the next waiting delivery becomes pending, unless another is still pending
// or in flight (a replay; or an attempt of this batch being retried, which the
// snapshot still sees delivering). It returns the outcomes recorded: an id missing
// was taken over by another holder after its lease ended.
//
// Its plans are pinned to lookups by key, whatever the statistics (plans_test.go): a
// generic plan made while deliveries looked empty read the whole of deliveries_leases
// (live and dead entries) on each finish for the literal 'delivering', its predicate,
// and with the state as a parameter, the whole of deliveries_listing. So the state it
// expects ($9) comes through the materialized input (held), which no index can match,
// and the rows are found by primary key; OFFSET 0 keeps the NOT EXISTS a
// probe by (subscription, conversation) per finished delivery, not an anti join over
// every pending or in-flight delivery.
const finishAttempts = `
WITH input AS MATERIALIZED (
    SELECT *, $9::text AS held FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bool[], $5::bigint[], $6::int[])
                  AS t(id, attempts, err, retry, delay_ms, status)
),
done AS (
    UPDATE deliveries d
    SET state = CASE WHEN i.err IS NULL THEN 'delivered'
                     WHEN i.retry AND d.since + $8 * interval '1 millisecond' > now() + i.delay_ms * interval '1 millisecond' THEN 'pending'
                     ELSE 'dead' END,
        run_at = now() + i.delay_ms * interval '1 millisecond',
        delivered_at = CASE WHEN i.err IS NULL THEN now() END,
        last_status = i.status, last_error = i.err, locked_by = NULL
    FROM input i
    WHERE d.id = i.id AND d.state = i.held AND d.locked_by = $7 AND d.attempts = i.attempts
    RETURNING d.id, d.state, d.subscription_id, d.conversation_id
),
next AS (
    SELECT w.id
    FROM done
    CROSS JOIN LATERAL (SELECT w.id FROM deliveries w
                        WHERE w.subscription_id = done.subscription_id AND w.conversation_id = done.conversation_id
                          AND w.state = 'waiting'
                        ORDER BY w.change_xid, w.change_seq
                        LIMIT 1) w
    WHERE done.state IN ('delivered', 'dead')
      AND NOT EXISTS (SELECT FROM deliveries o
                      WHERE o.subscription_id = done.subscription_id AND o.conversation_id = done.conversation_id
                        AND o.state IN ('pending', 'delivering')
                        AND o.id NOT IN (SELECT id FROM done WHERE state IN ('delivered', 'dead'))
                      OFFSET 0)
),
promoted AS (
    UPDATE deliveries SET state = 'pending', run_at = now()
    WHERE id IN (SELECT id FROM next)
    RETURNING id
)
SELECT id, state FROM done`

// The breaker's bookkeeping, per subscription of a batch ($1), from whether any of
// its attempts succeeded ($2) and how many failed ($3): a success closes it (written
// only when it was not closed already, so the common case does not touch the row);
// failures count up to the threshold $4, which opens it for a second; from there
// failures counts failed probes, each doubling the period, up to breakerCap ($5 ms).
// However many attempts fail in one batch, they are one step: 16 attempts that hung
// together and timed out together are one outage, and counting each (as a first
// version did) shut a recovered endpoint out for minutes. Failures while it is open
// (of attempts that were in flight when it opened) are not counted either.
const breakerUpdate = `
UPDATE subscriptions s
SET failures = CASE WHEN b.ok THEN 0
                    WHEN s.failures >= $4 THEN s.failures + 1
                    ELSE least(s.failures + b.failed, $4) END,
    blocked_until = CASE WHEN NOT b.ok AND s.failures + b.failed >= $4
                         THEN now() + least(interval '1 second' * power(2, least(greatest(s.failures + 1 - $4, 0), 20)),
                                            $5 * interval '1 millisecond') END
FROM unnest($1::bigint[], $2::bool[], $3::int[]) AS b(sub, ok, failed)
WHERE s.id = b.sub
  AND CASE WHEN b.ok THEN s.failures <> 0 OR s.blocked_until IS NOT NULL
           ELSE s.blocked_until IS NULL OR s.blocked_until <= now() END`

// finisher records outcomes until ctx ends (Run ends it once nothing is in flight).
func (d *Deliverer) finisher(ctx context.Context) {
	for {
		var batch []attempt
		select {
		case <-ctx.Done():
			return
		case a := <-d.results:
			batch = append(batch, a)
		}
	more:
		for len(batch) < finishBatch {
			select {
			case a := <-d.results:
				batch = append(batch, a)
			default:
				break more
			}
		}
		if err := d.finish(context.WithoutCancel(ctx), batch); err != nil {
			d.log.Warn("recording deliveries' outcomes failed; their leases will end and they will be sent again",
				zap.Int("deliveries", len(batch)), zap.Error(err))
		}
		for range batch {
			<-d.slots
			d.inflight.Done()
		}
		signal(d.freed) // slots are free, and the conversations' next may be due
	}
}

// finish records a batch of outcomes in one implicit transaction: the order locks of
// their conversations (sorted: so that a fan-out adding to a conversation and this
// promotion see each other), the fenced outcomes and promotions, and the breakers.
func (d *Deliverer) finish(ctx context.Context, batch []attempt) error {
	n := len(batch)
	ids, attempts, delays := make([]int64, n), make([]int32, n), make([]int64, n)
	errs, statuses, retry := make([]*string, n), make([]*int32, n), make([]bool, n)
	keys := make([]int32, 0, n)
	type tally struct {
		ok     bool
		failed int32
	}
	subs := map[int64]*tally{}
	for i, a := range batch {
		ids[i], attempts[i], retry[i] = a.c.ID, int32(a.c.Attempts), a.r.retry
		delays[i] = a.r.delay(a.c.Attempts).Milliseconds()
		if a.r.err != "" {
			errs[i] = &a.r.err
		}
		if a.r.status != 0 {
			s := int32(a.r.status)
			statuses[i] = &s
		}
		keys = append(keys, orderKey(a.c.Subscription, a.c.ConversationID))
		t := subs[a.c.Subscription]
		if t == nil {
			t = &tally{}
			subs[a.c.Subscription] = t
		}
		if a.r.err == "" {
			t.ok = true
		} else {
			t.failed++
		}
	}
	var subIDs []int64
	var oks []bool
	var fails []int32
	for id, t := range subs {
		subIDs, oks, fails = append(subIDs, id), append(oks, t.ok), append(fails, t.failed)
	}
	b := d.batch()
	b.Queue(lockOrders, sortedUnique(keys), orderLockSpace)
	recorded := map[int64]string{}
	b.Queue(finishAttempts, ids, attempts, errs, retry, delays, statuses, d.cfg.ID, d.cfg.GiveUp.Milliseconds(), "delivering").Query(func(rows pgx.Rows) error {
		var id int64
		var state string
		_, err := pgx.ForEachRow(rows, []any{&id, &state}, func() error { recorded[id] = state; return nil })
		return err
	})
	b.Queue(breakerUpdate, subIDs, oks, fails, breakerAfter, breakerCap.Milliseconds())
	if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("finish %d deliveries: %w", n, err)
	}
	for _, a := range batch {
		d.recorded(a, recorded[a.c.ID])
	}
	return nil
}

// recorded counts and logs one outcome ("" when another holder had taken it over).
func (d *Deliverer) recorded(a attempt, state string) {
	c, r := a.c, a.r
	switch state {
	case "":
		d.log.Info("delivery was taken over after its lease ended; its outcome is the new holder's",
			zap.Int64("delivery_id", c.ID), zap.Int("attempt", c.Attempts))
		return
	case "dead":
		d.log.Warn("delivery is dead: replay it once the endpoint is fixed", zap.Int64("delivery_id", c.ID),
			zap.Int64("subscription_id", c.Subscription), zap.Int("attempt", c.Attempts), zap.String("error", r.err))
	case "pending":
		d.log.Debug("delivery will be retried", zap.Int64("delivery_id", c.ID),
			zap.Int64("subscription_id", c.Subscription), zap.Int("attempt", c.Attempts), zap.String("error", r.err))
	}
	d.metrics.observe(c, r, time.Now())
}
