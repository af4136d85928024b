package ingest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
)

// request is a queued request as Write makes it, with its own context.
func request(ctx context.Context, events []Event) *writeReq {
	return &writeReq{ctx: ctx, events: events, reply: make(chan writeReply, 1)}
}

// TestCollect: a batch takes what is queued up to the limit (a request that reaches
// it ends the batch), and leaves out requests that were answered already.
func TestCollect(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	for _, tc := range []struct {
		name   string
		queued []*writeReq
		limit  int
		want   int // requests in the batch
		left   int // still queued after it
	}{
		{"up to the limit", []*writeReq{request(live, event("a")), request(live, event("b")), request(live, event("c"))}, 2, 2, 1},
		{"a request may pass the limit", []*writeReq{request(live, events("x", 3)), request(live, event("b"))}, 2, 1, 1},
		{"answered requests are left out", []*writeReq{request(live, event("a")), request(gone, event("b")), request(live, event("c"))}, 10, 2, 0},
		{"an answered first request", []*writeReq{request(gone, event("a"))}, 10, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			queue := make(chan *writeReq, 10)
			for _, r := range tc.queued[1:] {
				queue <- r
			}
			batch := collect(queue, tc.queued[0], time.Time{}, tc.limit)
			if len(batch) != tc.want || len(queue) != tc.left {
				t.Errorf("batch of %d, %d left queued; want %d and %d", len(batch), len(queue), tc.want, tc.left)
			}
			for _, r := range batch {
				if r.ctx.Err() != nil {
					t.Error("an answered request is in the batch")
				}
			}
		})
	}
}

// TestAnsweredRequestIsNotCommitted: a queued request that gave up before the
// committer took it costs no commit. (Should the next request join its batch, the
// test passes either way: it can miss the defect, never report a false one.)
func TestAnsweredRequestIsNotCommitted(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	w, reg, _ := startWriter(t, url, WriterConfig{}, nil)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	w.queue <- request(gone, event("gone"))
	pgtest.Eventually(t, "the committer takes the request", time.Minute, func() (bool, error) {
		return len(w.queue) == 0, nil
	})
	if _, err := w.Write(context.Background(), event("live")); err != nil {
		t.Fatal(err)
	}
	var commits uint64
	for _, n := range commitSizes(t, reg) {
		commits += n
	}
	if commits != 1 {
		t.Errorf("%d commits, want 1 (the answered request's batch was empty)", commits)
	}
}

// TestCommitLastsUntilTheLastDeadline: a commit may run until the last of its
// requests stops waiting, so a request with time left is stored and answered even
// when another in its batch gave up.
func TestCommitLastsUntilTheLastDeadline(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	w := NewWriter(pool, zap.NewNop(), NewMetrics(nil), WriterConfig{Timeout: time.Minute})
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	long, cancelLong := context.WithTimeout(ctx, time.Minute)
	defer cancelLong()
	soon, later := request(short, event("soon")), request(long, event("held"))
	// An uncommitted insert of the key holds the commit back, and is rolled back once
	// the commit waits for it; the first request has given up by then.
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'held', '{}')`)
		<-short.Done()
		return err
	}, false, func() error { w.commit(ctx, []*writeReq{soon, later}, false); return nil })
	r := <-later.reply
	if r.err != nil || len(r.results) != 1 || r.results[0].ID == 0 || r.results[0].Duplicate {
		t.Errorf("the request with time left: %+v, want its event stored", r)
	}
}

// TestDuplicateInOneBatch: a key twice in one commit is stored once, and its second
// copy is answered as a duplicate of the first, with its id.
func TestDuplicateInOneBatch(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	w := NewWriter(pool, zap.NewNop(), NewMetrics(nil), WriterConfig{})
	reqCtx, cancel := context.WithTimeout(ctx, time.Minute) // a request's, as Write gives it
	defer cancel()
	first, second := request(reqCtx, event("twice")), request(reqCtx, event("twice"))
	w.commit(ctx, []*writeReq{first, second}, false)
	a, b := <-first.reply, <-second.reply
	if a.err != nil || b.err != nil {
		t.Fatal(a.err, b.err)
	}
	if a.results[0].Duplicate || !b.results[0].Duplicate || b.results[0].ID != a.results[0].ID {
		t.Errorf("first %+v, second %+v; want the second a duplicate of the first, with its id", a.results[0], b.results[0])
	}
	if n := countEvents(t, pool, "twice"); n != 1 {
		t.Errorf("stored %d times", n)
	}
}

// TestNothingToWrite: a request without events is answered at once with an empty
// list (JSON [], not null).
func TestNothingToWrite(t *testing.T) {
	w := NewWriter(nil, zap.NewNop(), NewMetrics(nil), WriterConfig{})
	results, err := w.Write(context.Background(), nil)
	if err != nil || results == nil || len(results) != 0 {
		t.Errorf("Write(nil) = %#v, %v; want an empty list", results, err)
	}
}

// TestOnCommit: OnCommit hears of the events a commit inserted pending, those the
// processor must claim; not of those the handoff adopted, nor of duplicates.
func TestOnCommit(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	proc := idleAdopter(pool, url)
	var mu sync.Mutex
	var heard []int
	w, _, _ := startWriter(t, url, WriterConfig{Handoff: proc.Handoff(), OnCommit: func(n int) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, n)
	}}, nil)
	for _, evs := range [][]Event{
		events("adopted", 2),
		events("bulk", bulkEvents+1),
		events("bulk", bulkEvents+1), // duplicates
		events("adopted", 2),         // duplicates
	} {
		if _, err := w.Write(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 1 || heard[0] != bulkEvents+1 {
		t.Errorf("OnCommit heard %v, want [%d]: the large request's pending events only", heard, bulkEvents+1)
	}
}

// TestFailedCommitGivesItsPlacesBack: the handoff places a failed commit reserved
// are given back, so later events are still adopted.
func TestFailedCommitGivesItsPlacesBack(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	proc := idleAdopter(pool, url)
	w, _, _ := startWriter(t, url, WriterConfig{Handoff: proc.Handoff()}, nil)
	refused := []Event{{Provider: "generic", ExternalID: "nul", Payload: []byte(`{"a": "\u0000"}`), Headers: []byte("{}")}}
	for range 3 {
		if _, err := w.Write(ctx, refused); !errors.Is(err, errUnstorable) {
			t.Fatalf("a payload jsonb refuses: %v, want errUnstorable", err)
		}
	}
	if _, err := w.Write(ctx, events("after", 8)); err != nil {
		t.Fatal(err)
	}
	var claimed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE state = 'processing' AND locked_by = 'adopter'`).Scan(&claimed); err != nil {
		t.Fatal(err)
	}
	if claimed != 8 {
		t.Errorf("%d of 8 events adopted after failed commits, want 8 (the handoff has room for 8)", claimed)
	}
}

// TestGaveUpMakesUnready: a request that waited its whole timeout makes the writer
// unready for a while, even with no commit running or failed (a backlog).
func TestGaveUpMakesUnready(t *testing.T) {
	w := NewWriter(nil, zap.NewNop(), NewMetrics(nil), WriterConfig{Timeout: 50 * time.Millisecond})
	// Not running: the request stays queued until it gives up.
	if _, err := w.Write(context.Background(), event("a")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Write with no committer = %v, want ErrUnavailable", err)
	}
	if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		t.Errorf("Ready() = %v, want webhooks gave up waiting", err)
	}
}

// TestHealth: what makes the writer unready, and for how long.
func TestHealth(t *testing.T) {
	down := &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}
	refused := &pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"}
	for _, tc := range []struct {
		name  string
		setup func(w *Writer)
		ready bool
	}{
		{"new", func(*Writer) {}, true},
		{"a commit failed for the database's reasons", func(w *Writer) { w.health.end(w.health.begin(), down) }, false},
		{"a payload was refused", func(w *Writer) { w.health.end(w.health.begin(), refused) }, true},
		{"a failure older than the window", func(w *Writer) {
			w.health.end(w.health.begin(), down)
			w.health.lastFail = time.Now().Add(-failWindow - time.Second)
		}, true},
		{"a success since the failure", func(w *Writer) {
			w.health.end(w.health.begin(), down)
			w.health.end(w.health.begin(), nil)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWriter(nil, zap.NewNop(), NewMetrics(nil), WriterConfig{})
			tc.setup(w)
			if err := w.Ready(); (err == nil) != tc.ready {
				t.Errorf("Ready() = %v, want ready %v", err, tc.ready)
			}
		})
	}
}

// TestIsTimeout: both of the server's timeouts count as the database being slow.
func TestIsTimeout(t *testing.T) {
	for code, want := range map[string]bool{"55P03": true, "57014": true, "57P01": false, "23505": false} {
		if got := isTimeout(&pgconn.PgError{Code: code}); got != want {
			t.Errorf("isTimeout(%s) = %v, want %v", code, got, want)
		}
	}
}

// TestClassify: what a failed commit's requests are answered, said once.
func TestClassify(t *testing.T) {
	w := NewWriter(nil, zap.NewNop(), NewMetrics(nil), WriterConfig{})
	refused := classify(&pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"})
	if !errors.Is(refused, errUnstorable) || errors.Is(refused, ErrUnavailable) {
		t.Errorf("a refused value: %v, want errUnstorable only", refused)
	}
	slow := classify(w.slow())
	if !errors.Is(slow, ErrUnavailable) || strings.Count(slow.Error(), ErrUnavailable.Error()) != 1 {
		t.Errorf("a slow commit: %q, want ErrUnavailable, said once", slow)
	}
	down := classify(errors.New("connection refused"))
	if !errors.Is(down, ErrUnavailable) {
		t.Errorf("a lost connection: %v, want ErrUnavailable", down)
	}
}
