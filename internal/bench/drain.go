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

// The probes Drain asks: whether the queue is empty (through the queue's partial
// index; River's batched and per-event jobs record their outcome there too, on
// processor.QueueApply), and the first and last processing time; of events, or (jobs)
// of bench/river's native variant, whose queue is River's job table alone.
const (
	eventsEmpty = "SELECT NOT EXISTS (SELECT 1 FROM inbound_events WHERE state IN ('pending', 'processing'))"
	eventsSpan  = "SELECT min(processed_at), max(processed_at) FROM inbound_events"
	jobsEmpty   = "SELECT NOT EXISTS (SELECT 1 FROM river_job WHERE state NOT IN ('completed', 'cancelled', 'discarded'))"
	jobsSpan    = "SELECT min(finalized_at), max(finalized_at) FROM river_job WHERE state = 'completed'"
)

// Drain times how fast start processes the n events FillEvents stored (as River jobs
// when jobs is set): n over the time from the first processing to the last, so that a
// server's start-up is not counted. With cpu set, the cost is measured from start
// until the queue is empty.
func Drain(ctx context.Context, system string, pool *pgxpool.Pool, n int, cpu *CPUMeter, start func() error, jobs bool) (Result, error) {
	emptyQuery, spanQuery := eventsEmpty, eventsSpan
	if jobs {
		emptyQuery, spanQuery = jobsEmpty, jobsSpan
	}
	if cpu != nil {
		if err := cpu.Start(); err != nil {
			return Result{}, err
		}
	}
	if err := start(); err != nil {
		return Result{}, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var ok bool
		if err := pool.QueryRow(ctx, emptyQuery).Scan(&ok); err != nil {
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
	r := Result{System: system, Mode: "drain", Events: n}
	if cpu != nil {
		c, err := cpu.Stop(n)
		if err != nil {
			return Result{}, err
		}
		r.CPU = &c
	}
	var first, last time.Time
	if err := pool.QueryRow(ctx, spanQuery).Scan(&first, &last); err != nil {
		return Result{}, err
	}
	r.EventsPerSec = float64(n) / last.Sub(first).Seconds()
	return r, nil
}
