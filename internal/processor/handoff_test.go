package processor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
)

// TestHandoffReserveIsBounded: no more than the limit is reserved at a time, places
// come back when given back or taken by a worker, and none is granted after stop.
func TestHandoffReserveIsBounded(t *testing.T) {
	h := newHandoff("me", time.Second, 8)
	h.release = func([]claimed) {}
	if got := h.Reserve(5); got != 5 {
		t.Fatalf("Reserve(5) = %d, want 5", got)
	}
	if got := h.Reserve(5); got != 3 {
		t.Fatalf("Reserve(5) with 3 left = %d, want 3", got)
	}
	if got := h.Reserve(1); got != 0 {
		t.Fatalf("Reserve(1) when full = %d, want 0", got)
	}
	h.Unreserve(2)
	h.Adopt([]Adopted{{ID: 1}, {ID: 2}, {ID: 3}})
	if got := h.Reserve(9); got != 2 {
		t.Fatalf("Reserve after giving 2 back = %d, want 2", got)
	}
	if b := h.take(nil, 64); len(b) != 3 || b[0].Attempts != 1 || b[0].State != "processing" {
		t.Fatalf("take = %+v, want the 3 adopted, attempt 1, processing", b)
	}
	if got := h.Reserve(9); got != 3 {
		t.Fatalf("Reserve after a worker took 3 = %d, want 3", got)
	}
	// Commits that queued while the workers were busy are taken as one batch, each
	// event with its trace.
	h.Unreserve(8)
	h.Reserve(3)
	for id := range int64(3) {
		h.Adopt([]Adopted{{ID: 4 + id, Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	}
	if b := h.take(nil, 64); len(b) != 3 || b[2].Traceparent == nil {
		t.Fatalf("take = %+v, want the 3 queued commits' events, with their traces", b)
	}
	// A batch a worker receives itself gives its places back too.
	h.Reserve(2)
	h.Adopt([]Adopted{{ID: 7}, {ID: 8}})
	h.got(<-h.ch)
	if got := h.Reserve(9); got != 8 {
		t.Fatalf("Reserve after a worker received 2 = %d, want all 8", got)
	}
	h.close()
	h.Unreserve(8)
	if got := h.Reserve(1); got != 0 {
		t.Fatalf("Reserve after stop = %d, want 0", got)
	}
}

// TestHandoffReleasesAtStop: adopted events that no worker applied, waiting when the
// workers stopped or handed over after, go back to pending with their attempt
// uncounted, rather than sitting leased until the lease ends.
func TestHandoffReleasesAtStop(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	ctx := context.Background()
	p := New(pool, url, Config{ID: "stopping", BatchSize: 4}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	h := p.Handoff()
	if got := h.Reserve(2); got != 2 {
		t.Fatalf("Reserve(2) = %d", got)
	}
	var ids []int64
	rows, err := pool.Query(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, run_at, locked_until, locked_by)
SELECT 'generic', 'stop-' || i, $1::jsonb, 'processing', 1, now() + interval '1 hour', now() + interval '1 hour', 'stopping'
FROM generate_series(1, 2) i
RETURNING id`, received("m-stop", "hi", time.Now()))
	if err == nil {
		for rows.Next() {
			var id int64
			err = rows.Scan(&id)
			ids = append(ids, id)
		}
		rows.Close()
	}
	if err != nil || len(ids) != 2 {
		t.Fatalf("insert claimed events: %v (%d rows)", err, len(ids))
	}
	h.Adopt([]Adopted{{ID: ids[0], Provider: "generic"}}) // waiting for a worker at stop
	h.close()
	h.Adopt([]Adopted{{ID: ids[1], Provider: "generic"}}) // committed after the stop
	var pending int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events
		WHERE state = 'pending' AND attempts = 0 AND locked_by IS NULL AND run_at <= now()`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 2 {
		t.Fatalf("%d of 2 adopted events released to pending at stop", pending)
	}
}

// TestAdoptedEventsDoNotWaitForABusyWorker: while every claiming worker is busy (here
// the only one, stuck in a backlog event), events handed over by this process's
// ingest are still applied: the handoff has a worker of its own.
func TestAdoptedEventsDoNotWaitForABusyWorker(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	ctx := context.Background()
	stuck, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	norm := func(payload []byte, at time.Time) (provider.Normalized, error) {
		if strings.Contains(string(payload), "block-me") {
			once.Do(func() { close(stuck) })
			<-unblock
		}
		return generic.Normalize(payload, at)
	}
	p := start(t, url, Config{ID: "busy", Workers: 1, Normalizers: map[string]provider.Normalizer{"generic": norm}})
	defer close(unblock) // before the processor's stop (cleanups run after defers)
	insertEvents(t, pool, received("m-block", "block-me", time.Now()))
	select {
	case <-stuck:
	case <-time.After(time.Minute):
		t.Fatal("the worker never took the backlog event")
	}
	h := p.Handoff()
	if h.Reserve(1) != 1 {
		t.Fatal("no room in the handoff")
	}
	var id int64
	err := pool.QueryRow(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, run_at, locked_until, locked_by)
VALUES ('generic', 'adopted', $1::jsonb, 'processing', 1, now() + interval '1 hour', now() + interval '1 hour', 'busy')
RETURNING id`, received("m-adopted", "hi", time.Now())).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	h.Adopt([]Adopted{{ID: id, Provider: "generic", ReceivedAt: time.Now(), Payload: []byte(received("m-adopted", "hi", time.Now()))}})
	pgtest.Eventually(t, "the adopted event processed while the worker is stuck", 30*time.Second, func() (bool, error) {
		var state string
		err := pool.QueryRow(ctx, "SELECT state FROM inbound_events WHERE id = $1", id).Scan(&state)
		return state == "processed", err
	})
}
