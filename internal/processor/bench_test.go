package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
)

// BenchmarkDrain measures claim+normalize+apply throughput: b.N events are inserted
// while no processor runs, then one processor (default workers) drains them. The
// batch size is the knob under test.
//
//	go test -run '^$' -bench Drain -benchtime 20000x ./internal/processor/
func BenchmarkDrain(b *testing.B) {
	for _, size := range []int{1, 8, 32, 64, 128} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			pool, url := pgtest.NewPool(b)
			fill(b, pool, b.N)
			p := New(pool, url, Config{BatchSize: size, Workers: 8}, zap.NewNop(), NewMetrics(prometheus.NewRegistry()))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ResetTimer()
			go p.Run(ctx)
			for {
				var left int
				pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state <> 'processed'").Scan(&left)
				if left == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// fill inserts n generic events over 50 conversations, in chunks.
func fill(b *testing.B, pool *pgxpool.Pool, n int) {
	b.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', 'e-' || i, jsonb_build_object(
    'type', 'message.received', 'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'data', jsonb_build_object('message_id', 'm-' || i, 'channel', '+15550001111',
                               'contact', '+1555' || lpad((i % 50)::text, 7, '0'), 'text', 'hello'))
FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkClaim measures one claim of a batch of 64 (claimDue, round-robin across
// lanes) against a queue whose due events are spread over a number of lanes, ten
// each, and one lane with a backlog of 100,000. Each claim's events are handed back
// (released) untimed, so every claim meets the same queue.
//
//	go test -run '^$' -bench Claim -benchtime 200x ./internal/processor/
func BenchmarkClaim(b *testing.B) {
	for _, lanes := range []int{1, 10, 10000} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			pool, _ := pgtest.NewPool(b)
			ctx := context.Background()
			insertLane(b, pool, "generic/backlog", 100000)
			if lanes > 1 {
				_, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, lane, payload)
SELECT 'generic', 'l-' || l || '-' || i, 'generic/lane-' || l, '{}'
FROM generate_series(1, $1::int) AS l, generate_series(1, 10) AS i`, lanes-1)
				if err != nil {
					b.Fatal(err)
				}
			}
			if _, err := pool.Exec(ctx, "VACUUM ANALYZE inbound_events"); err != nil {
				b.Fatal(err)
			}
			p := New(pool, "", Config{ID: "bench"}, zap.NewNop(), NewMetrics(prometheus.NewRegistry()))
			b.ResetTimer()
			for range b.N {
				evs, err := p.claim(ctx, 64)
				if err != nil || len(evs) < 64 {
					b.Fatalf("claimed %d: %v", len(evs), err)
				}
				b.StopTimer()
				if err := p.release(ctx, evs); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
