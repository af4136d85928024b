// Package bench measures a webhook service end to end: open-loop webhook load with
// acknowledgement and end-to-end latency and its CPU cost (rate, ramp), raw queue
// speed (drain), and the machine's commit ceiling (ceiling). `inboxd-bench`
// (cmd/inboxd-bench) measures inboxd and the River baseline (bench/river) with it,
// so that every system is measured by the same code.
//
// Tables: it reads inbound_events (processed_at) to time each event, and writes only
// to the databases it creates for itself.
package bench

import (
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Latency is a distribution summary; JSON in milliseconds.
type Latency struct {
	N   int
	P50 time.Duration
	P95 time.Duration
	P99 time.Duration
	Max time.Duration
}

// MarshalJSON writes milliseconds, which is what people read.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(map[string]any{"n": l.N, "p50_ms": ms(l.P50), "p95_ms": ms(l.P95), "p99_ms": ms(l.P99), "max_ms": ms(l.Max)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var raw map[string]float64
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	d := func(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
	*l = Latency{N: int(raw["n"]), P50: d(raw["p50_ms"]), P95: d(raw["p95_ms"]), P99: d(raw["p99_ms"]), Max: d(raw["max_ms"])}
	return nil
}

// Summarize sorts ds and reads its percentiles (nearest rank).
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.5) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Latency{N: len(ds), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ds[len(ds)-1]}
}

// Result is one measurement, in a shape both systems report.
type Result struct {
	System  string `json:"system"`            // inboxd, inboxd-batch1, river-per-event, river-batched, river-noop, postgres
	Mode    string `json:"mode"`              // rate, cost (cost-run: one of its runs), drain (drain-run: one of its runs; drain-sweep: River's MaxWorkers sweep) or ceiling
	Workers int    `json:"workers,omitempty"` // River's MaxWorkers

	// rate
	TargetRate   int     `json:"target_rate,omitempty"`
	AchievedRate float64 `json:"achieved_rate,omitempty"` // acknowledged requests per second
	Requests     int     `json:"requests,omitempty"`
	Errors       int     `json:"errors,omitempty"`
	Duplicates   int     `json:"duplicates,omitempty"`
	Unprocessed  int     `json:"unprocessed,omitempty"` // acknowledged but not processed within the wait
	Ack          Latency `json:"ack_latency"`           // scheduled send → acknowledgement
	EndToEnd     Latency `json:"e2e_latency"`           // acknowledgement → processed commit
	FromSchedule Latency `json:"e2e_from_schedule"`     // scheduled send → processed commit
	// with a subscriber (deliver): scheduled send → the subscriber's receipt of the
	// message.created change, and the new messages it did not receive within 30 s
	Delivered        Latency `json:"delivered_latency,omitzero"`
	Undelivered      int     `json:"undelivered,omitempty"`
	Deliveries       int     `json:"deliveries,omitempty"` // deliver: changes delivered in the drain
	DeliveriesPerSec float64 `json:"deliveries_per_sec,omitempty"`

	// rate and drain: what it cost (nil when Postgres is not on this machine)
	CPU *CPU `json:"cpu,omitempty"`
	// cost and drain: a summary of Runs repeated runs (SummarizeRuns). The figures are the
	// median run's (by CPU per 1,000 events; a drain's by events/s); the spreads are
	// each figure's own median and interquartile range over the runs; Unprocessed is
	// summed over them, and LowestRate is the lowest rate any of them achieved.
	Runs       int     `json:"runs,omitempty"`
	CPUSpread  *Spread `json:"cpu_per_1000_events_ms_spread,omitempty"`
	WALSpread  *Spread `json:"wal_bytes_per_event_spread,omitempty"`
	P99Spread  *Spread `json:"from_schedule_p99_ms_spread,omitempty"`
	RateSpread *Spread `json:"events_per_sec_spread,omitempty"`
	LowestRate float64 `json:"lowest_achieved_rate,omitempty"`

	// drain
	Events       int     `json:"events,omitempty"`
	EventsPerSec float64 `json:"events_per_sec,omitempty"`

	// retention: rows retention deleted during the rate step; growth: the table's size
	Deleted       int64    `json:"deleted,omitempty"`
	DeletedPerSec float64  `json:"deleted_per_sec,omitempty"`
	Samples       []Sample `json:"samples,omitempty"`

	// ceiling
	Clients           int     `json:"clients,omitempty"`
	CommitsPerSec     float64 `json:"commits_per_sec,omitempty"`
	NotifyCommitsPerS float64 `json:"notify_commits_per_sec,omitempty"`
}

// Spread is one figure over repeated runs: its median and interquartile range (Q1
// and Q3, the medians of the lower and upper halves of the sorted values, the median
// itself left out when their number is odd; a single run's value for both), and the
// number of runs (0 in summaries written before it was recorded).
type Spread struct {
	Median float64 `json:"median"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
	Runs   int     `json:"runs,omitempty"`
}

// SpreadOf summarizes vs (not changed).
func SpreadOf(vs []float64) Spread {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s) == 1 {
		return Spread{Median: s[0], Q1: s[0], Q3: s[0], Runs: 1}
	}
	half := len(s) / 2
	return Spread{Median: median(s), Q1: median(s[:half]), Q3: median(s[len(s)-half:]), Runs: len(s)}
}

// median of sorted values; 0 for none.
func median(sorted []float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// Apart reports whether a and b differ beyond the noise of the runs: their
// interquartile ranges do not overlap. No difference is claimed otherwise, nor from
// a single run, which has no range.
func Apart(a, b Spread) bool {
	if a.Runs == 1 || b.Runs == 1 {
		return false
	}
	return a.Q3 < b.Q1 || b.Q3 < a.Q1
}

// SummarizeRuns summarizes repeated runs of one system on one workload (one rate, or
// one drain) as mode: the median run by CPU per 1,000 events (a drain's by events/s),
// with the spread of each figure. On a shared machine single runs of the same code
// differ by a fifth; only the medians of several runs, interleaved with the other
// systems' in a random order, compare.
func SummarizeRuns(mode string, runs []Result) Result {
	var cpu, wal, p99, rate []float64
	unprocessed, lowest := 0, math.Inf(1)
	for _, r := range runs {
		if r.CPU != nil {
			cpu, wal = append(cpu, r.CPU.PerThousand), append(wal, r.CPU.WALPerEvent)
		}
		p99 = append(p99, float64(r.FromSchedule.P99.Microseconds())/1000)
		rate = append(rate, r.EventsPerSec)
		unprocessed += r.Unprocessed
		lowest = min(lowest, r.AchievedRate)
	}
	sorted := slices.Clone(runs)
	key := func(r Result) float64 {
		if mode == "drain" || r.CPU == nil {
			return r.EventsPerSec
		}
		return r.CPU.PerThousand
	}
	slices.SortStableFunc(sorted, func(a, b Result) int { return cmp.Compare(key(a), key(b)) })
	m := sorted[len(sorted)/2]
	m.Mode, m.Runs, m.Unprocessed = mode, len(runs), unprocessed
	if len(cpu) > 0 {
		c, w := SpreadOf(cpu), SpreadOf(wal)
		m.CPUSpread, m.WALSpread = &c, &w
	}
	if mode == "drain" {
		r := SpreadOf(rate)
		m.RateSpread = &r
	} else {
		p := SpreadOf(p99)
		m.P99Spread, m.LowestRate = &p, lowest
	}
	return m
}
