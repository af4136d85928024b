package processor

import (
	"context"
	"fmt"
	"slices"
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
	// The rank rounds up: the median of three is the second.
	three := Minute{Latency: make([]int64, len(LatencyBuckets)+1)}
	three.Latency[0], three.Latency[2] = 1, 2
	if got := three.Quantile(0.5); got != 5*time.Millisecond {
		t.Errorf("the median of 1 ms, 5 ms, 5 ms: %s, want 5ms", got)
	}
	m.Latency[len(LatencyBuckets)] = 50 // beyond the last bound
	if got := m.Quantile(0.99); got != 5*time.Minute {
		t.Errorf("beyond the last bound: %s", got)
	}
}

// TestRollupFlush: a batch's outcomes are counted into their minute (retries and
// dead ones too), added to what the process's row holds, summed over processes when
// read, kept when a flush fails, and minutes past rollupKeep are deleted.
func TestRollupFlush(t *testing.T) {
	t.Parallel()
	db, url := newDB(t)
	ctx := context.Background()
	newProc := func(id string) *Processor {
		return New(db, url, Config{ID: id, Normalizers: map[string]provider.Normalizer{"generic": generic.Normalize}}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	}
	a, b := newProc("proc-a"), newProc("proc-b")
	minute := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)
	var c counts
	c.observe("processed", 3*time.Millisecond)  // bucket ≤ 5 ms
	c.observe("processed", 40*time.Millisecond) // bucket ≤ 50 ms
	c.observe("pending", 0)
	c.observe("dead", 0)
	a.rollup.add(minute.Add(10*time.Second), c)
	a.rollup.add(minute.Add(50*time.Second), c) // the same minute
	if err := a.flushRollup(ctx); err != nil {
		t.Fatal(err)
	}
	// A flush that fails keeps its counts for the next one.
	a.rollup.add(minute.Add(20*time.Second), c)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.flushRollup(cancelled); err == nil {
		t.Fatal("a flush with a cancelled context succeeded")
	}
	a.rollup.add(minute.Add(30*time.Second), c)
	if err := a.flushRollup(ctx); err != nil {
		t.Fatal(err)
	}
	// Another process's counts of the same minute, and an older minute of its own.
	b.rollup.add(minute, c)
	b.rollup.add(minute.Add(-time.Minute), c)
	if _, err := db.Exec(ctx, `INSERT INTO queue_minutes (minute, process, processed, retried, dead, latency)
VALUES (now() - interval '25 hours', 'gone', 1, 0, 0, '{1}')`); err != nil {
		t.Fatal(err)
	}
	if err := b.flushRollup(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := ReadMinutes(ctx, db, time.Now().Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	latency := func(at5, at50 int64) []int64 {
		l := make([]int64, len(LatencyBuckets)+1)
		l[2], l[5] = at5, at50
		return l
	}
	want := []Minute{
		{Start: minute.Add(-time.Minute), Processed: 2, Retried: 1, Dead: 1, Latency: latency(1, 1)},
		{Start: minute, Processed: 10, Retried: 5, Dead: 5, Latency: latency(5, 5)}, // a: 4 adds, b: 1
	}
	if len(ms) != len(want) {
		t.Fatalf("minutes %+v, want %+v (the 25-hour-old one deleted)", ms, want)
	}
	for i := range want {
		got := ms[i]
		if !got.Start.Equal(want[i].Start) || got.Processed != want[i].Processed || got.Retried != want[i].Retried ||
			got.Dead != want[i].Dead || !slices.Equal(got.Latency, want[i].Latency) {
			t.Errorf("minute %d: %+v, want %+v", i, got, want[i])
		}
	}
}

// TestRollupPutBack: counts a failed flush puts back are added to those counted
// since in the same minute, not lost under them.
func TestRollupPutBack(t *testing.T) {
	var r rollup
	minute := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	c := counts{processed: 1, retried: 2, dead: 3, latencies: []time.Duration{3 * time.Millisecond}}
	r.add(minute, c)
	failed := r.take()
	r.add(minute.Add(time.Second), c) // counted while the flush was failing
	r.putBack(failed)
	ms := r.take()
	if len(ms) != 1 {
		t.Fatalf("minutes %+v, want one", ms)
	}
	if m := ms[0]; m.Processed != 2 || m.Retried != 4 || m.Dead != 6 || m.Latency[2] != 2 {
		t.Errorf("after a put back: %+v, want 2 processed, 4 retried, 6 dead, 2 latencies at ≤ 5 ms", m)
	}
}
