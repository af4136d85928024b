package processor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Retention keeps the tables from growing for ever (migrations/006 says why it deletes
// in batches rather than dropping partitions). Three things go:
//   - processed events received more than Config.Retention ago, with their payloads
//     (their messages and conversations stay: they are the product);
//   - dead events received more than Config.DeadRetention ago, so that no personal
//     data is kept for ever by accident;
//   - parked statuses (of messages never seen) parked more than Config.Retention ago.
//
// Each is deleted in transactions of retentionBatch rows, oldest first, each holding
// its row locks for milliseconds and skipping rows locked by anyone else; between
// batches the loop pauses three times as long as the batch took, so retention takes
// at most a quarter of one connection's time: a catch-up (retention just turned on, or
// a process back after days) deletes tens of thousands of rows a second without
// pushing live traffic's latency past its targets (docs/operations.md has the figures),
// and steady state deletes what arrived a retention period ago. Each batch first takes a transaction-scoped
// advisory lock without waiting: with several processes, one deletes and the others
// skip their turn (a transaction-scoped lock also works through a transaction-mode
// pooler, where a session lock would not).

// Defaults of INBOX_RETENTION and INBOX_DEAD_RETENTION.
const (
	DefaultRetention     = 7 * 24 * time.Hour
	DefaultDeadRetention = 30 * 24 * time.Hour
)

const (
	retentionBatch = 1000
	// retentionLock is the advisory lock key of a retention batch ("inboxd retention").
	retentionLock = 0x696e626f78720001
)

// retentionInterval is how often retention runs: a tenth of the shortest retention,
// between a second and a minute.
func retentionInterval(c Config) time.Duration {
	shortest := c.Retention
	if shortest <= 0 || (c.DeadRetention > 0 && c.DeadRetention < shortest) {
		shortest = c.DeadRetention
	}
	return min(max(shortest/10, time.Second), time.Minute)
}

// retain runs retention soon after start (a process that was down catches up at
// once), then every retentionInterval, until ctx ends. The waits are jittered so that
// several processes do not all try at the same moment.
func (p *Processor) retain(ctx context.Context) {
	if p.cfg.Retention <= 0 && p.cfg.DeadRetention <= 0 {
		return
	}
	every := retentionInterval(p.cfg)
	wait := time.Second
	for sleep(ctx, wait+time.Duration(rand.Int64N(int64(wait)/5+1))) {
		if err := p.retainOnce(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("retention", zap.Error(err))
		}
		wait = every
	}
}

// retainOnce deletes everything due, batch by batch.
func (p *Processor) retainOnce(ctx context.Context) error {
	start := time.Now()
	var processed, dead, parked, changes int64
	var err error
	if p.cfg.Retention > 0 {
		cutoff := time.Now().Add(-p.cfg.Retention)
		var boundary int64
		if boundary, err = p.retentionBoundary(ctx, cutoff); err != nil {
			return err
		}
		if processed, err = p.deleteBatches(ctx, "processed_events", deleteProcessed, boundary, cutoff); err != nil {
			return err
		}
		if parked, err = p.deleteBatches(ctx, "parked_statuses", deleteParked, cutoff); err != nil {
			return err
		}
		if changes, err = p.deleteBatches(ctx, "changes", deleteChanges, cutoff); err != nil {
			return err
		}
	}
	if p.cfg.DeadRetention > 0 {
		cutoff := time.Now().Add(-p.cfg.DeadRetention)
		var boundary int64
		if boundary, err = p.retentionBoundary(ctx, cutoff); err != nil {
			return err
		}
		if dead, err = p.deleteBatches(ctx, "dead_events", deleteDead, boundary, cutoff); err != nil {
			return err
		}
	}
	if processed+dead+parked+changes > 0 {
		p.log.Info("retention", zap.Int64("processed_events", processed), zap.Int64("dead_events", dead),
			zap.Int64("parked_statuses", parked), zap.Int64("changes", changes), zap.Duration("took", time.Since(start)))
	}
	return nil
}

// retentionBoundary finds, by binary search over the primary key, an id below which
// events were received before cutoff (ids follow arrival). deleteProcessed then walks
// the primary key up to it, and deleteDead the dead events' index: without the bound,
// a pass that finds nothing to delete would read the whole index looking for it.
func (p *Processor) retentionBoundary(ctx context.Context, cutoff time.Time) (int64, error) {
	var lo, hi int64
	if err := p.pool.QueryRow(ctx, "SELECT COALESCE(min(id), 0), COALESCE(max(id), 0) + 1 FROM inbound_events").Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("retention bounds: %w", err)
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		var id int64
		var at time.Time
		err := p.pool.QueryRow(ctx, "SELECT id, received_at FROM inbound_events WHERE id >= $1 ORDER BY id LIMIT 1", mid).Scan(&id, &at)
		switch {
		case err == pgx.ErrNoRows || (err == nil && !at.Before(cutoff)):
			hi = mid
		case err == nil:
			lo = id + 1
		default:
			return 0, fmt.Errorf("retention boundary: %w", err)
		}
	}
	return lo, nil
}

// deleteProcessed deletes up to $3 processed events older than $2 below id $1.
const deleteProcessed = `
WITH doomed AS (
    SELECT id FROM inbound_events
    WHERE id < $1 AND state = 'processed' AND received_at < $2
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM inbound_events e USING doomed WHERE e.id = doomed.id`

// deleteDead deletes up to $3 dead events older than $2 below id $1, through the
// partial index of dead events: without the bound, a pass that finds nothing to delete
// would walk every dead event (TestProcessorPlans).
const deleteDead = `
WITH doomed AS (
    SELECT id FROM inbound_events
    WHERE id < $1 AND state = 'dead' AND received_at < $2
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM inbound_events e USING doomed WHERE e.id = doomed.id`

// deleteParked deletes up to $2 statuses parked before $1. The rows it locked are
// deleted by their ctid (a row locked cannot move): a join back to the table could be
// planned, generic, as a walk of one of its indexes (TestProcessorPlans).
const deleteParked = `
DELETE FROM pending_statuses
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM pending_statuses
    WHERE created_at < $1
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED))`

// deleteChanges deletes up to $2 entries of the change feed made before $1, found
// through the BRIN index on occurred_at (time follows insertion): a pass that finds
// nothing reads a few index pages (and the changes kept for their deliveries, below),
// not the feed. It moves the feed's horizon (changes_horizon, migration 022) to the
// last change it deletes, in the same statement: a follower whose cursor is before it
// may have missed changes that are gone, and internal/feed tells it so (410
// cursor_expired) rather than resuming at the oldest change kept without a word.
//
// A change a subscription has yet to deliver (internal/delivery: waiting, pending or
// delivering) is kept until its delivery ends, delivered or dead (at
// INBOX_DELIVERY_GIVE_UP; a paused subscription's clock waits while it is paused).
// Deleting it would take its delivery with it (ON DELETE CASCADE): an outage longer
// than the retention would lose what the subscriber was still owed, and with the head
// of a conversation's deliveries gone, the ones waiting behind it would never be
// promoted: they would wait until given up, dead without a try. So is a change after
// a subscription's fan-out cursor (subscriptions are few: the check reads them all): a
// paused subscription is not fanned out, and the changes committed meanwhile, which
// it is sent after it resumes, have no deliveries yet to keep them.
//
// The check is an index probe per change (the deliveries' unique key starts with the
// change; OFFSET 0 keeps it a probe: as a join, a generic plan could walk the feed's
// whole primary key to merge it with the deliveries), and the rows locked are deleted
// by their ctid, as deleteParked's are.
const deleteChanges = `
WITH doomed AS MATERIALIZED (
    SELECT ctid, xid, seq FROM changes c
    WHERE occurred_at < $1
      AND (c.xid, c.seq) <= ALL (SELECT cursor_xid, cursor_seq FROM subscriptions)
      AND NOT EXISTS (SELECT FROM deliveries d
                      WHERE d.change_xid = c.xid AND d.change_seq = c.seq
                        AND d.state IN ('waiting', 'pending', 'delivering')
                      OFFSET 0)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
horizon AS (
    INSERT INTO changes_horizon AS h (xid, seq)
    SELECT xid, seq FROM doomed ORDER BY xid DESC, seq DESC LIMIT 1
    ON CONFLICT (one) DO UPDATE SET xid = EXCLUDED.xid, seq = EXCLUDED.seq
    WHERE (h.xid, h.seq) < (EXCLUDED.xid, EXCLUDED.seq)
)
DELETE FROM changes
WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed))`

// deleteBatches runs sql (a batch delete, args then the batch size) until a batch comes
// back short, another process holds the retention lock, or ctx ends; it returns how
// many rows it deleted.
func (p *Processor) deleteBatches(ctx context.Context, what, sql string, args ...any) (int64, error) {
	var total int64
	for ctx.Err() == nil {
		start := time.Now()
		var n int64
		locked := false
		err := pgx.BeginTxFunc(ctx, p.pool, p.begin(), func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", int64(retentionLock)).Scan(&locked); err != nil || !locked {
				return err
			}
			tag, err := tx.Exec(ctx, sql, append(args, retentionBatch)...)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("delete %s: %w", what, err)
		}
		total += n
		p.metrics.retained.WithLabelValues(what).Add(float64(n))
		if !locked || n < retentionBatch {
			return total, nil
		}
		sleep(ctx, 3*time.Since(start)) // at most a quarter of a connection's time
	}
	return total, nil
}
