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
	Mode    string `json:"mode"`              // rate, cost (cost-run: one of its runs), drain or ceiling
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
	// cost: the median of Runs rate runs by CPU per 1,000 events (that run's figures),
	// and the lowest and highest of them
	Runs     int       `json:"runs,omitempty"`
	CPURange []float64 `json:"cpu_range_per_1000_events_ms,omitempty"`

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

// MedianCost summarizes repeated rate runs of one system at one rate (all with CPU
// measured): the run with the median CPU per 1,000 events, as mode "cost", with the
// number of runs and the range. On a shared machine single runs of the same code
// differ by a fifth; the median of a few, interleaved with the other systems' runs,
// is what compares.
func MedianCost(runs []Result) Result {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b Result) int { return cmp.Compare(a.CPU.PerThousand, b.CPU.PerThousand) })
	m := sorted[len(sorted)/2]
	m.Mode, m.Runs = "cost", len(sorted)
	m.CPURange = []float64{sorted[0].CPU.PerThousand, sorted[len(sorted)-1].CPU.PerThousand}
	return m
}
