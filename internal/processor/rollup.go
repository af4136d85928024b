package processor

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// The per-minute rollup (queue_minutes, migration 014) is what the console's overview
// charts: per minute, the events this process finished and how long each took from
// receipt to processed. It is counted in memory as outcomes are recorded (report) and
// added to this process's row of the minute every rollupEvery, so it costs one small
// statement per process every few seconds, however many events flow. A process that
// dies loses at most its last rollupEvery of counts: the charts are a view, the
// metrics and the tables the record.

// LatencyBuckets are the upper bounds of the rollup's latency buckets (the last,
// +Inf, is implicit): those of inbox_event_latency_seconds.
var LatencyBuckets = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute,
}

// rollupEvery is how often a process adds its counts to queue_minutes.
const rollupEvery = 5 * time.Second

// rollupKeep is how long minutes are kept.
const rollupKeep = 24 * time.Hour

// Minute is one minute of the rollup.
type Minute struct {
	Start     time.Time
	Processed int64
	Retried   int64
	Dead      int64
	Latency   []int64 // counts per LatencyBuckets, then one for longer
}

// Quantile estimates the q-quantile of the minute's latency (0 < q ≤ 1) as the upper
// bound of the bucket it falls in; 0 when nothing was processed. Beyond the last
// bound it answers that bound.
func (m Minute) Quantile(q float64) time.Duration {
	var total int64
	for _, n := range m.Latency {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total) + 0.999999)
	var seen int64
	for i, n := range m.Latency {
		seen += n
		if seen >= rank && i < len(LatencyBuckets) {
			return LatencyBuckets[i]
		}
	}
	return LatencyBuckets[len(LatencyBuckets)-1]
}

// rollup counts outcomes in memory until the next flush.
type rollup struct {
	mu      sync.Mutex
	minutes map[time.Time]*Minute
}

// counts are one batch's outcomes, added to the rollup at once (one lock a batch,
// not one an event).
type counts struct {
	processed, retried, dead int64
	latencies                []time.Duration // of the processed ones
}

func (c *counts) observe(state string, latency time.Duration) {
	switch state {
	case "processed":
		c.processed++
		c.latencies = append(c.latencies, latency)
	case "pending":
		c.retried++
	case "dead":
		c.dead++
	}
}

// add adds a batch's counts to the minute at falls in.
func (r *rollup) add(at time.Time, c counts) {
	start := at.UTC().Truncate(time.Minute)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.minutes == nil {
		r.minutes = map[time.Time]*Minute{}
	}
	m := r.minutes[start]
	if m == nil {
		m = &Minute{Start: start, Latency: make([]int64, len(LatencyBuckets)+1)}
		r.minutes[start] = m
	}
	m.Processed += c.processed
	m.Retried += c.retried
	m.Dead += c.dead
	for _, l := range c.latencies {
		i, _ := slices.BinarySearch(LatencyBuckets, l)
		m.Latency[i]++
	}
}

// take empties the rollup and returns what it held.
func (r *rollup) take() []*Minute {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Minute, 0, len(r.minutes))
	for _, m := range r.minutes {
		out = append(out, m)
	}
	r.minutes = nil
	return out
}

// addMinute adds a minute's counts to this process's row. The latency arrays are
// added element by element.
const addMinute = `
INSERT INTO queue_minutes AS q (minute, process, processed, retried, dead, latency)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (minute, process) DO UPDATE SET
    processed = q.processed + excluded.processed,
    retried = q.retried + excluded.retried,
    dead = q.dead + excluded.dead,
    latency = (SELECT array_agg(a + b ORDER BY i) FROM unnest(q.latency, excluded.latency) WITH ORDINALITY AS t(a, b, i))`

// flushRollup writes what the rollup holds and deletes minutes older than
// rollupKeep. Counts that could not be written are put back for the next flush.
func (p *Processor) flushRollup(ctx context.Context) error {
	minutes := p.rollup.take()
	b := p.batch() // the processor's settings, as every statement on its pool
	for _, m := range minutes {
		b.Queue(addMinute, m.Start, p.cfg.ID, m.Processed, m.Retried, m.Dead, m.Latency)
	}
	b.Queue(`DELETE FROM queue_minutes WHERE minute < now() - $1::bigint * interval '1 second'`, int64(rollupKeep.Seconds()))
	if err := p.send(ctx, b); err != nil {
		p.rollup.putBack(minutes)
		return fmt.Errorf("write the per-minute rollup: %w", err)
	}
	return nil
}

func (r *rollup) putBack(ms []*Minute) {
	for _, m := range ms {
		r.mu.Lock()
		cur := r.minutes[m.Start]
		if cur == nil {
			if r.minutes == nil {
				r.minutes = map[time.Time]*Minute{}
			}
			r.minutes[m.Start] = m
		} else {
			cur.Processed += m.Processed
			cur.Retried += m.Retried
			cur.Dead += m.Dead
			for i := range cur.Latency {
				cur.Latency[i] += m.Latency[i]
			}
		}
		r.mu.Unlock()
	}
}

// keepRollup flushes the rollup every rollupEvery until ctx ends. The last flush is
// Run's, once every worker has returned (a batch finishing during the stop reports
// after ctx ended).
func (p *Processor) keepRollup(ctx context.Context) {
	for sleep(ctx, rollupEvery) {
		if err := p.flushRollup(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rollup", zap.Error(err))
		}
	}
}

// lastRollup writes what the rollup still holds, with a short deadline of its own,
// so that a stopping process's last seconds are counted.
func (p *Processor) lastRollup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.flushRollup(ctx); err != nil {
		p.log.Warn("rollup at stop", zap.Error(err))
	}
}

// ReadMinutes returns the rollup's minutes since since, oldest first, summed over
// processes; minutes in which nothing finished are absent.
func ReadMinutes(ctx context.Context, pool *pgxpool.Pool, since time.Time) ([]Minute, error) {
	rows, err := pool.Query(ctx, `
SELECT minute, processed, retried, dead, latency FROM queue_minutes
WHERE minute >= $1 ORDER BY minute`, since)
	if err != nil {
		return nil, fmt.Errorf("read the per-minute rollup: %w", err)
	}
	var out []Minute
	var m Minute
	_, err = pgx.ForEachRow(rows, []any{&m.Start, &m.Processed, &m.Retried, &m.Dead, &m.Latency}, func() error {
		if n := len(out); n > 0 && out[n-1].Start.Equal(m.Start) {
			last := &out[n-1]
			last.Processed += m.Processed
			last.Retried += m.Retried
			last.Dead += m.Dead
			for i := range min(len(last.Latency), len(m.Latency)) {
				last.Latency[i] += m.Latency[i]
			}
			return nil
		}
		m.Latency = slices.Clone(m.Latency)
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the per-minute rollup: %w", err)
	}
	return out, nil
}
