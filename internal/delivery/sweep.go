package delivery

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// The sweep, every SweepInterval: deliveries whose lease ended (their process died or
// hung) become pending again; secrets rotated out whose time ran out are dropped;
// undelivered deliveries past the give-up time are dead (an endpoint whose breaker
// kept it closed for that long is given up on too); and the lag gauges are read.
// Due retries need no sweep of their own: each sweep is followed by a claim pass.

// rescueExpired makes deliveries whose lease ended pending again, at once: their
// attempt was counted at the claim, and the endpoint may or may not have got it.
const rescueExpired = `
WITH expired AS MATERIALIZED (
    SELECT id FROM deliveries
    WHERE state = 'delivering' AND run_at <= now()
    ORDER BY run_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET state = 'pending', run_at = now(), locked_by = NULL,
    last_error = format('lease of %s expired during attempt %s: the process stopped (crash, kill or hang) before recording the outcome', d.locked_by, d.attempts)
FROM expired
WHERE d.id = expired.id`

// forgetSecrets drops the secrets rotated out whose time has run out (RotateSecret):
// nothing signs with them any more, and a secret kept for nothing is one more to leak.
const forgetSecrets = `
UPDATE subscriptions SET previous_secret = NULL, previous_secret_until = NULL
WHERE previous_secret_until <= now()`

// giveUpCandidates are the (subscription, conversation) pairs with undelivered
// deliveries past the give-up time ($1 ms since they were made), of active
// subscriptions (a paused one's clock restarts when it resumes).
const giveUpCandidates = `
SELECT DISTINCT d.subscription_id, d.conversation_id
FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id AND s.state = 'active'
WHERE d.state IN ('waiting', 'pending') AND d.since <= now() - $1 * interval '1 millisecond'
LIMIT 1000`

// giveUp declares one pair's expired deliveries dead, under its order lock, and
// promotes its next waiting delivery when nothing is left pending or in flight.
const giveUp = `
WITH dead AS (
    UPDATE deliveries
    SET state = 'dead', locked_by = NULL,
        last_error = coalesce(last_error || '; ', '') || format('given up: not delivered within %s (INBOX_DELIVERY_GIVE_UP)', $4::text)
    WHERE subscription_id = $1 AND conversation_id = $2 AND state IN ('waiting', 'pending')
      AND since <= now() - $3 * interval '1 millisecond'
    RETURNING id
)
UPDATE deliveries
SET state = 'pending', run_at = now()
WHERE id = (SELECT w.id FROM deliveries w
            WHERE w.subscription_id = $1 AND w.conversation_id = $2 AND w.state = 'waiting'
              AND w.id NOT IN (SELECT id FROM dead)
              AND NOT EXISTS (SELECT FROM deliveries o
                              WHERE o.subscription_id = $1 AND o.conversation_id = $2
                                AND o.state IN ('pending', 'delivering') AND o.id NOT IN (SELECT id FROM dead))
            ORDER BY w.change_xid, w.change_seq
            LIMIT 1)`

// The sweep's statements run with the processor's settings (d.batch), like claims:
// they are index scans of the partial indexes of migration 013 (leases, since), and
// the table's statistics are as stale as a queue's.
func (d *Deliverer) sweep(ctx context.Context) {
	b := d.batch()
	var rescued int64
	b.Queue(rescueExpired).Exec(func(tag pgconn.CommandTag) error { rescued = tag.RowsAffected(); return nil })
	b.Queue(forgetSecrets)
	if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
		d.warnSweep(ctx, "rescue expired deliveries and forget old secrets", err)
	} else if rescued > 0 {
		d.log.Warn("deliveries whose lease expired are pending again", zap.Int64("deliveries", rescued))
	}
	if err := d.giveUpExpired(ctx); err != nil {
		d.warnSweep(ctx, "give up on old deliveries", err)
	}
	if err := d.metrics.readLag(ctx, d.pool); err != nil {
		d.warnSweep(ctx, "read delivery lag", err)
	}
}

func (d *Deliverer) warnSweep(ctx context.Context, what string, err error) {
	if ctx.Err() == nil {
		d.log.Warn("delivery sweep: "+what+" failed; the next sweep tries again", zap.Error(err))
	}
}

func (d *Deliverer) giveUpExpired(ctx context.Context) error {
	var pairs [][2]int64
	b := d.batch()
	b.Queue(giveUpCandidates, d.cfg.GiveUp.Milliseconds()).Query(func(rows pgx.Rows) error {
		var err error
		pairs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]int64, error) {
			var p [2]int64
			return p, row.Scan(&p[0], &p[1])
		})
		return err
	})
	if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	for _, p := range pairs {
		b := d.batch()
		b.Queue(lockOrders, []int32{orderKey(p[0], p[1])}, orderLockSpace)
		b.Queue(giveUp, p[0], p[1], d.cfg.GiveUp.Milliseconds(), d.cfg.GiveUp.String())
		if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("subscription %d: %w", p[0], err)
		}
	}
	if len(pairs) > 0 {
		d.log.Warn("deliveries not delivered within the give-up time are dead; list them with inboxd subscriptions deliveries --state dead, replay them once the endpoint is back",
			zap.Int("conversations", len(pairs)), zap.Duration("give_up", d.cfg.GiveUp))
	}
	return nil
}

// lagSQL is, per subscription, the age of its oldest undelivered change (0 when it
// has none): the first undelivered delivery by id in each undelivered state (three
// index probes), joined to its change, and the first change after its fan-out cursor
// (one probe of the feed's key), which it is owed but has no delivery of yet: a
// paused subscription is not fanned out, and what it is owed, which retention keeps
// for it, would otherwise show no lag however long it waits.
const lagSQL = `
SELECT s.id, coalesce(extract(epoch FROM now() - least(min(c.occurred_at), (
           SELECT n.occurred_at FROM changes n
           WHERE (n.xid, n.seq) > (s.cursor_xid, s.cursor_seq)
           ORDER BY n.xid, n.seq LIMIT 1))), 0)::float8
FROM subscriptions s
CROSS JOIN unnest(ARRAY['waiting', 'pending', 'delivering']) AS st(state)
LEFT JOIN LATERAL (SELECT d.change_xid, d.change_seq FROM deliveries d
                   WHERE d.subscription_id = s.id AND d.state = st.state
                   ORDER BY d.id LIMIT 1) o ON true
LEFT JOIN changes c ON c.xid = o.change_xid AND c.seq = o.change_seq
GROUP BY s.id`
