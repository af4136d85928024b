package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
)

func events(prefix string, n int) []Event {
	var out []Event
	for i := range n {
		out = append(out, event(fmt.Sprintf("%s-%d", prefix, i))...)
	}
	return out
}

// idleAdopter is a processor named "adopter" that is not running: what it adopts waits
// in its handoff, which holds 4 batches of 2, leased for an hour.
func idleAdopter(pool *pgxpool.Pool, url string) *processor.Processor {
	return processor.New(pool, url, processor.Config{ID: "adopter", BatchSize: 2, Lease: time.Hour},
		zap.NewNop(), processor.NewMetrics(prometheus.NewRegistry()))
}

// TestWriterAdopts: a small request's events are inserted claimed by this process's
// processor, as many as its handoff has room for (leased for the whole lease, first
// attempt counted); the rest, duplicates' places and large requests are not.
func TestWriterAdopts(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	proc := idleAdopter(pool, url)
	w, _, _ := startWriter(t, url, WriterConfig{Handoff: proc.Handoff()}, nil)
	write := func(evs []Event) {
		t.Helper()
		if _, err := w.Write(ctx, evs); err != nil {
			t.Fatalf("write %d events: %v", len(evs), err)
		}
	}
	count := func(prefix string) (claimed, pending int) {
		t.Helper()
		err := pool.QueryRow(ctx, `
SELECT count(*) FILTER (WHERE state = 'processing' AND attempts = 1 AND locked_by = 'adopter'
                         AND run_at > now() + interval '59 minutes' AND locked_until = run_at),
       count(*) FILTER (WHERE state = 'pending' AND attempts = 0 AND locked_by IS NULL AND run_at <= now())
FROM inbound_events WHERE external_id LIKE $1 || '-%'`, prefix).Scan(&claimed, &pending)
		if err != nil {
			t.Fatal(err)
		}
		return claimed, pending
	}

	write(events("bulk", bulkEvents+1))
	if c, p := count("bulk"); c != 0 || p != bulkEvents+1 {
		t.Errorf("large request: %d claimed, %d pending; want all pending", c, p)
	}
	write(events("small", 5))
	if c, p := count("small"); c != 5 || p != 0 {
		t.Errorf("small request: %d claimed, %d pending; want 5 claimed", c, p)
	}
	write(events("small", 5)) // a redelivery: its places are given back
	write(events("more", 6))
	if c, p := count("more"); c != 3 || p != 3 {
		t.Errorf("with 3 places left: %d claimed, %d pending; want 3 and 3", c, p)
	}
}

// TestAdoptedEventsAreNotClaimed: with a running processor, events this process
// commits reach its workers through the handoff: processed on their first attempt
// with no claim statement taking them (each row written at insert and at finish only).
func TestAdoptedEventsAreNotClaimed(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	proc := processor.New(pool, url, processor.Config{SweepInterval: 100 * time.Millisecond}, zap.NewNop(), processor.NewMetrics(reg))
	done := make(chan error, 1)
	go func() { done <- proc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	w, _, _ := startWriter(t, url, WriterConfig{Handoff: proc.Handoff(), OnCommit: proc.Committed}, nil)
	const n = 20
	for i := range n {
		if _, err := w.Write(context.Background(), event(fmt.Sprintf("handoff-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.Eventually(t, "all processed", time.Minute, func() (bool, error) {
		var processed int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound_events WHERE state = 'processed' AND attempts = 1`).Scan(&processed)
		return processed == n, err
	})
	claims := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "inbox_claims_total" {
			for _, m := range f.GetMetric() {
				claims[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if claims["events"] != 0 || claims["handoff"] == 0 {
		t.Errorf("claims by outcome %v: want the handoff's batches only, no claim that found events", claims)
	}
}
