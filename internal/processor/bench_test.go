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
