package processor

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Lanes (docs/lanes.md). An event's lane is its stored provider and the channel it was
// sent to (provider.Lane); claimDue hands work out round-robin across the lanes with
// due events, so that a backlog on one lane delays another lane's events by about a
// batch, not by the backlog.

// MaxLaneWeight bounds a weight in INBOX_LANE_WEIGHTS: a lane's share of a batch is
// its weight over the sum of the weights of the lanes in the claim.
const MaxLaneWeight = 100

// ParseLaneWeights reads INBOX_LANE_WEIGHTS: lane=weight pairs, comma-separated
// ("meta/100000000000001=4,twilio/+15550001111=2"). A lane not listed weighs 1. The
// lane is everything before the last '=', so a lane may contain '='; none may
// contain a comma.
func ParseLaneWeights(s string) (map[string]int, error) {
	weights := map[string]int{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		i := strings.LastIndexByte(pair, '=')
		if i <= 0 {
			return nil, fmt.Errorf("%q is not lane=weight (e.g. meta/100000000000001=4)", pair)
		}
		lane, raw := pair[:i], pair[i+1:]
		w, err := strconv.Atoi(raw)
		if err != nil || w < 1 || w > MaxLaneWeight {
			return nil, fmt.Errorf("lane %q: weight %q must be a whole number from 1 to %d", lane, raw, MaxLaneWeight)
		}
		if _, dup := weights[lane]; dup {
			return nil, fmt.Errorf("lane %q is weighed twice", lane)
		}
		weights[lane] = w
	}
	return weights, nil
}

// laneRound is this process's place in the round of lanes: the lane after which its
// next claim starts, shared by its workers.
type laneRound struct {
	mu      sync.Mutex
	at      string
	names   []string // the weighed lanes, sorted
	weights []int32  // their weights
}

func newLaneRound(weights map[string]int) *laneRound {
	r := &laneRound{}
	for lane := range weights {
		r.names = append(r.names, lane)
	}
	sort.Strings(r.names)
	for _, lane := range r.names {
		r.weights = append(r.weights, int32(weights[lane]))
	}
	return r
}

func (r *laneRound) cursor() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

// visit is how many lanes a claim of limit events visits at most: one per event.
func (r *laneRound) visit(limit int) int { return max(limit, 1) }

// advance moves the cursor after a claim that started after from and returned events.
// A claim that reached its last lane (it visited as many as it may) is continued
// after that lane; one that saw every lane with due events starts the next claim one
// lane further on, which passes round the unused part of a batch (claimDue's rest).
// Another worker's claim that moved the cursor since from wins.
func (r *laneRound) advance(from string, events []claimed, limit int) {
	first, last := "", ""
	firstAt, lastAt := 0, 0
	for _, e := range events {
		if e.Visit <= 0 {
			continue
		}
		if firstAt == 0 || e.Visit < firstAt {
			first, firstAt = e.Lane, e.Visit
		}
		if e.Visit > lastAt {
			last, lastAt = e.Lane, e.Visit
		}
	}
	if firstAt == 0 {
		return
	}
	next := first
	if lastAt >= r.visit(limit) {
		next = last
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at == from {
		r.at = next
	}
}

// LaneTop is how many lanes ReadLanes names: the busiest, by pending events; the rest
// are summed as one row, "other" (metrics' label cardinality stays bounded).
const LaneTop = 10

// LaneState is one row of ReadLanes.
type LaneState struct {
	// Lane is provider/channel; "other" sums the lanes past the top, and "none" is
	// the lane of events stored without one (before lanes, or inserted by hand).
	Lane    string `json:"lane"`
	Lanes   int    `json:"lanes"`   // how many lanes the row sums: 1, or more for "other"
	Pending int64  `json:"pending"` // events waiting, due or scheduled for a retry
	// OldestDueSeconds is how long the longest-waiting due event has been due: how far
	// behind the lane is (0 when none is due).
	OldestDueSeconds float64 `json:"oldest_due_seconds"`
}

// readLanes groups the pending events by lane (an ordered read of
// inbound_events_lanes: its cost is the backlog's size) and keeps the busiest
// LaneTop. It has no parameter, so that its prepared plan is generic without the
// processor's settings (session.go).
var readLanes = fmt.Sprintf(`
WITH per_lane AS (
    SELECT lane, count(*) AS pending,
           COALESCE(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8 AS oldest_due
    FROM inbound_events
    WHERE state = 'pending'
    GROUP BY lane
),
ranked AS (
    SELECT *, row_number() OVER (ORDER BY pending DESC, lane) AS rank FROM per_lane
)
SELECT CASE WHEN rank > %d THEN 'other' WHEN lane = '' THEN 'none' ELSE lane END,
       count(*)::int, sum(pending)::bigint, max(oldest_due)
FROM ranked
GROUP BY 1
ORDER BY min(rank)`, LaneTop)

// ReadLanes reads the lanes with pending events: the busiest LaneTop, then "other".
func ReadLanes(ctx context.Context, pool *pgxpool.Pool) ([]LaneState, error) {
	rows, err := pool.Query(ctx, readLanes)
	if err != nil {
		return nil, fmt.Errorf("read lanes: %w", err)
	}
	lanes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[LaneState])
	if err != nil {
		return nil, fmt.Errorf("read lanes: %w", err)
	}
	return lanes, nil
}

// updateLanes samples the lanes into their gauges, replacing the last sample (a lane
// that left the top, or drained, loses its series).
func (p *Processor) updateLanes(ctx context.Context) error {
	lanes, err := ReadLanes(ctx, p.pool)
	if err != nil {
		return err
	}
	p.metrics.lanePending.Reset()
	p.metrics.laneOldest.Reset()
	for _, l := range lanes {
		p.metrics.lanePending.WithLabelValues(l.Lane).Set(float64(l.Pending))
		p.metrics.laneOldest.WithLabelValues(l.Lane).Set(l.OldestDueSeconds)
	}
	return nil
}
