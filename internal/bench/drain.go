package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// fillEvents writes n generic events straight into inbound_events: 1,000 contacts,
// a fifth of the events outbound messages, the rest inbound, as webhooks would have
// stored them. It returns the ids' range.
const fillEvents = `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', 'drain-' || i, jsonb_build_object(
    'type', CASE WHEN i % 5 = 0 THEN 'message.sent' ELSE 'message.received' END,
    'timestamp', to_char(now() AT TIME ZONE 'UTC' + i * interval '1 millisecond', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'data', jsonb_build_object('message_id', 'drain-m-' || i, 'channel', '+15550001111',
                               'contact', '+1555' || lpad((i % 1000)::text, 7, '0'),
                               'text', 'hello, this is message ' || i || ' of the benchmark'))
FROM generate_series(1, $1) AS i`

// FillEvents stores n pending events, as a backlog for a drain.
func FillEvents(ctx context.Context, pool *pgxpool.Pool, n int) error {
	for done := 0; done < n; done += 50000 {
		if _, err := pool.Exec(ctx, fillEvents, min(50000, n-done)); err != nil {
			return fmt.Errorf("fill %d events: %w", n, err)
		}
		if _, err := pool.Exec(ctx, "UPDATE inbound_events SET external_id = external_id || '-' || id WHERE external_id NOT LIKE '%-%-%'"); err != nil {
			return fmt.Errorf("fill %d events: %w", n, err)
		}
	}
	_, err := pool.Exec(ctx, "VACUUM ANALYZE inbound_events")
	return err
}

// Drain times how long start takes to process the n events FillEvents stored:
// from the database's clock when start is called to the last processed_at. done
// reports whether the queue is empty (each system knows how to ask).
func Drain(ctx context.Context, system string, pool *pgxpool.Pool, n int, start func(), done func(context.Context) (bool, error)) (Result, error) {
	var t0 time.Time
	if err := pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t0); err != nil {
		return Result{}, err
	}
	start()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		ok, err := done(ctx)
		if err != nil {
			return Result{}, err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return Result{}, fmt.Errorf("%s drain of %d events not done after 10 minutes", system, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var last time.Time
	if err := pool.QueryRow(ctx, "SELECT max(processed_at) FROM inbound_events").Scan(&last); err != nil {
		return Result{}, err
	}
	return Result{System: system, Mode: "drain", Events: n, EventsPerSec: float64(n) / last.Sub(t0).Seconds()}, nil
}

// QueueEmpty is inboxd's done for Drain: nothing pending or processing.
func QueueEmpty(pool *pgxpool.Pool) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		var open bool
		err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM inbound_events WHERE state IN ('pending', 'processing'))").Scan(&open)
		return !open, err
	}
}
