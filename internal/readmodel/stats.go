package readmodel

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
)

// Stats is the queue at a glance (GET /v1/stats, `inboxd stats`).
type Stats struct {
	Pending                 int64    `json:"pending"`
	Processing              int64    `json:"processing"`
	Dead                    int64    `json:"dead"`
	ProcessedEstimate       int64    `json:"processed_estimate"`
	ProcessedExact          bool     `json:"processed_exact"`
	OldestPendingAgeSeconds *float64 `json:"oldest_pending_age_seconds"`
	ReceivedLastMinute      int64    `json:"received_last_minute"`
	ProcessedLastMinute     int64    `json:"processed_last_minute"`
	// Lanes are the busiest lanes with pending events, then "other" (docs/lanes.md).
	Lanes []processor.LaneState `json:"lanes"`
	// The age of the oldest processed and dead events (0: none), how far back
	// retention has not reached; the console's overview shows them.
	OldestProcessedAge time.Duration `json:"-"`
	OldestDeadAge      time.Duration `json:"-"`
}

// lastMinute counts what arrived in the last minute, and what was processed in it
// among the events received in the last hour (a retry of something older that
// finished this minute is not in it), through the BRIN index on received_at.
const lastMinute = `
SELECT count(*) FILTER (WHERE received_at > now() - interval '1 minute'),
       count(*) FILTER (WHERE processed_at > now() - interval '1 minute')
FROM inbound_events WHERE received_at > now() - interval '1 hour'`

// ReadStats reads the queue's Stats: the states from inbox_queue_stats (exact for
// the live queue, an estimate of the processed history on large tables), and the
// last minute's throughput.
func ReadStats(ctx context.Context, pool *pgxpool.Pool) (Stats, error) {
	states, err := processor.ReadQueue(ctx, pool)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	for _, q := range states {
		switch q.State {
		case "pending":
			s.Pending = q.Count
			if q.Count > 0 {
				age := q.OldestAge.Seconds()
				s.OldestPendingAgeSeconds = &age
			}
		case "processing":
			s.Processing = q.Count
		case "dead":
			s.Dead, s.OldestDeadAge = q.Count, q.OldestAge
		case "processed":
			s.ProcessedEstimate, s.ProcessedExact, s.OldestProcessedAge = q.Count, q.Exact, q.OldestAge
		}
	}
	if err := pool.QueryRow(ctx, lastMinute).Scan(&s.ReceivedLastMinute, &s.ProcessedLastMinute); err != nil {
		return Stats{}, fmt.Errorf("queue stats: %w", err)
	}
	if s.Lanes, err = processor.ReadLanes(ctx, pool); err != nil {
		return Stats{}, err
	}
	if s.Lanes == nil {
		s.Lanes = []processor.LaneState{}
	}
	return s, nil
}
