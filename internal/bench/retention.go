package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// fillHistory writes $1 processed events received $2 ago, a second apart: the
// history retention deletes. The payloads are the shape and size webhooks store.
const fillHistory = `
INSERT INTO inbound_events (provider, external_id, state, attempts, run_at, received_at, processed_at, payload, headers)
SELECT 'generic', 'history-' || $3::bigint + g, 'processed', 1, t, t, t + interval '3 milliseconds',
       jsonb_build_object('type', 'message.received', 'timestamp', '2026-11-25T10:00:00Z',
           'data', jsonb_build_object('message_id', 'history-m-' || $3::bigint + g, 'channel', '+15550001111',
               'contact', '+1555' || lpad((g % 100000)::text, 7, '0'), 'text', 'hello, this is message ' || g || ' of the history')),
       '{"Content-Type":"application/json","User-Agent":"Svix-Webhooks/1.0"}'
FROM generate_series(1, $1) AS g, LATERAL (SELECT now() - $2::interval - ($1 - g) * interval '1 second') AS at(t)`

// FillHistory stores n processed events received before age, in statements of 100,000
// rows that bypass the notification trigger (a bulk load, not webhooks), then vacuums
// and analyzes the table and checkpoints, so that the measurement after it does not
// pay for the load's writes.
func FillHistory(ctx context.Context, pool *pgxpool.Pool, n int, age time.Duration) error {
	for done := 0; done < n; done += 100000 {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, fillHistory, min(100000, n-done), fmt.Sprintf("%d seconds", int64(age.Seconds())+int64(n-done)), done)
			return err
		})
		if err != nil {
			return fmt.Errorf("fill %d history events: %w", n, err)
		}
	}
	for _, sql := range []string{"VACUUM ANALYZE inbound_events", "CHECKPOINT"} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// Sample is the size of inbound_events at a moment of a run.
type Sample struct {
	AtSeconds float64 `json:"at_s"` // since the run started
	Rows      int64   `json:"rows"`
	Bytes     int64   `json:"bytes"` // table, TOAST and indexes
}

// TakeSample measures inbound_events now, at since the start of the run.
func TakeSample(ctx context.Context, pool *pgxpool.Pool, since time.Duration) (Sample, error) {
	s := Sample{AtSeconds: since.Seconds()}
	err := pool.QueryRow(ctx, "SELECT count(*), pg_total_relation_size('inbound_events') FROM inbound_events").Scan(&s.Rows, &s.Bytes)
	return s, err
}
