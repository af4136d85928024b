package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
)

// TestRollup: the events a processor finished are in the per-minute rollup once it
// has stopped, each with its latency counted: also one whose batch was still being
// applied when the stop began (its outcome is reported after the stop; the last
// flush must come after it).
func TestRollup(t *testing.T) {
	t.Parallel()
	db, url := newDB(t)
	inApply, release := make(chan struct{}), make(chan struct{})
	slow := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		if err == nil && n.Message != nil && n.Message.Text == "last" {
			close(inApply)
			<-release
		}
		return n, err
	}
	p := New(db, url, Config{Workers: 1, Normalizers: map[string]provider.Normalizer{"generic": slow}}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t0 := time.Now()
	for i := range 11 {
		insertEvents(t, db, received(fmt.Sprintf("m-%d", i), "hi", t0))
	}
	waitSettled(t, db, time.Minute)
	insertEvents(t, db, received("m-last", "last", t0))
	<-inApply
	stop()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	settled := waitSettled(t, db, time.Minute)
	ms, err := ReadMinutes(context.Background(), db, t0.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var processed, counted int64
	for _, m := range ms {
		processed += m.Processed
		for _, n := range m.Latency {
			counted += n
		}
	}
	if processed != int64(settled["processed"]) || counted != processed || processed != 12 {
		t.Errorf("rollup: %d processed with %d latencies, want the %d processed", processed, counted, settled["processed"])
	}
}

func TestQuantile(t *testing.T) {
	m := Minute{Latency: make([]int64, len(LatencyBuckets)+1)}
	if m.Quantile(0.99) != 0 {
		t.Error("an empty minute has a latency")
	}
	m.Latency[2] = 98 // ≤ 5 ms
	m.Latency[6] = 2  // ≤ 100 ms
	for q, want := range map[float64]time.Duration{0.5: 5 * time.Millisecond, 0.98: 5 * time.Millisecond, 0.99: 100 * time.Millisecond, 1: 100 * time.Millisecond} {
		if got := m.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %s, want %s", q, got, want)
		}
	}
	m.Latency[len(LatencyBuckets)] = 50 // beyond the last bound
	if got := m.Quantile(0.99); got != 5*time.Minute {
		t.Errorf("beyond the last bound: %s", got)
	}
}
