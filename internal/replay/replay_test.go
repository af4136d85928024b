package replay

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
	"inboxd/internal/readmodel"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// deadEvents inserts n dead events, oldest first; event i's contact is contacts[i %
// len(contacts)] (nil: unknown) and its payload says whether i is even.
func deadEvents(t *testing.T, pool *pgxpool.Pool, n int, contacts []*string) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		var id int64
		payload := `{"n": "odd"}`
		if i%2 == 0 {
			payload = `{"n": "even"}`
		}
		err := pool.QueryRow(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, last_error, contact)
VALUES ('generic', 'r-' || $1::int, $2, 'dead', 5, 'boom', $3) RETURNING id`, i, payload, contacts[i%len(contacts)]).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func ptr(s string) *string { return &s }

// deadIDs returns the ids of the dead events, in order.
func deadIDs(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, _ := pool.Query(context.Background(), `SELECT id FROM inbound_events WHERE state = 'dead' ORDER BY id`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// processInRandomOrder stands in for the processor, adversarially: until ctx ends it
// takes any pending event, at random, and marks it processed, recording the order
// in which each contact's events were applied and how often each event was.
type randomProcessor struct {
	mu        sync.Mutex
	byContact map[string][]int64
	times     map[int64]int
}

func (p *randomProcessor) run(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	p.byContact, p.times = map[string][]int64{}, map[int64]int{}
	for ctx.Err() == nil {
		var id int64
		var contact *string
		err := pool.QueryRow(ctx, `
UPDATE inbound_events SET state = 'processed', attempts = attempts + 1, processed_at = now()
WHERE id = (SELECT id FROM inbound_events WHERE state = 'pending' ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, contact`).Scan(&id, &contact)
		if errors.Is(err, pgx.ErrNoRows) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				t.Error(err)
			}
			return
		}
		p.mu.Lock()
		p.times[id]++
		if contact != nil {
			p.byContact[*contact] = append(p.byContact[*contact], id)
		}
		p.mu.Unlock()
	}
}

// waitAllProcessed waits until the stand-in processor has processed every event.
func waitAllProcessed(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	pgtest.Eventually(t, "every event processed", 2*time.Minute, func() (bool, error) {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound_events WHERE state <> 'processed'`).Scan(&n)
		return n == 0, err
	})
}

func start(t *testing.T, pool *pgxpool.Pool, f readmodel.EventFilter, rate int) int64 {
	t.Helper()
	upTo, n, _, err := readmodel.Matching(context.Background(), pool, f, MaxEvents, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Start(context.Background(), pool, f, upTo, n, rate, "admin")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// replayToEnd runs a replay of f at MaxRate to its end, with a runner and the
// stand-in processor working until ctx ends, and returns the job as it ended.
func replayToEnd(ctx context.Context, t *testing.T, pool *pgxpool.Pool, f readmodel.EventFilter) Job {
	t.Helper()
	var proc randomProcessor
	go proc.run(ctx, t, pool)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	id := start(t, pool, f, MaxRate)
	r.Wake()
	return waitState(t, pool, id, "done")
}

func waitState(t *testing.T, pool *pgxpool.Pool, id int64, want string) Job {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j, err := Get(context.Background(), pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("replay %d is %s after 2 minutes, want %s (%+v)", id, j.State, want, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInOrderPerContact: a replay of 120 dead events of four contacts (and some of
// no known contact) requeues each once, and each contact's events are applied in the
// order they were received, although the stand-in processor takes pending events in
// a random order.
func TestInOrderPerContact(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	contacts := []*string{ptr("+15550001"), ptr("+15550002"), nil, ptr("+15550003"), ptr("+15550001"), ptr("+15550004")}
	ids := deadEvents(t, pool, 120, contacts)
	var proc randomProcessor
	var wg sync.WaitGroup
	wg.Go(func() { proc.run(ctx, t, pool) })
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, MaxRate)
	r.Wake()
	j := waitState(t, pool, id, "done")
	if j.Requeued != 120 || j.Total != 120 {
		t.Errorf("requeued %d of %d, want 120 of 120", j.Requeued, j.Total)
	}
	// Wait for the last batch to be processed, then stop the stand-in.
	waitAllProcessed(t, pool)
	cancel()
	wg.Wait()
	for _, id := range ids {
		if proc.times[id] != 1 {
			t.Errorf("event %d applied %d times, want once", id, proc.times[id])
		}
	}
	for c, got := range proc.byContact {
		if !slices.IsSorted(got) {
			t.Errorf("contact %s's events applied out of order: %v", c, got)
		}
	}
	var private *string
	if err := pool.QueryRow(context.Background(), `SELECT private::text FROM replays WHERE id = $1`, id).Scan(&private); err != nil || private != nil {
		t.Errorf("a finished replay keeps its private filter: %v %v", private, err)
	}
}

// TestRateCap: 60 events at 40 a second take at least the time the rate allows
// (a bound below: a slow machine only makes it longer).
func TestRateCap(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 60, []*string{nil})
	var proc randomProcessor
	go proc.run(ctx, t, pool)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	began := time.Now()
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, 40)
	r.Wake()
	waitState(t, pool, id, "done")
	// The last batch (of 4) goes when the first 56 have had their 1.4 s.
	if took := time.Since(began); took < 1400*time.Millisecond {
		t.Errorf("60 events at 40/s took %s, want at least 1.4 s", took)
	}
}

// TestPayloadFilter: a replay takes only the events whose payload matches.
func TestPayloadFilter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ids := deadEvents(t, pool, 30, []*string{nil})
	if j := replayToEnd(ctx, t, pool, readmodel.EventFilter{State: "dead", Path: `$.n ? (@ == "even")`}); j.Requeued != 15 || j.Total != 15 {
		t.Errorf("requeued %d of %d, want the 15 even ones", j.Requeued, j.Total)
	}
	left := deadIDs(t, pool)
	var odd []int64
	for i, id := range ids {
		if i%2 == 1 {
			odd = append(odd, id)
		}
	}
	if !slices.Equal(left, odd) {
		t.Errorf("still dead: %v, want the odd ones %v", left, odd)
	}
}

// TestCancel: a cancelled replay requeues nothing more, and forgets its filter.
func TestCancel(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 200, []*string{nil})
	var proc randomProcessor
	go proc.run(ctx, t, pool)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	id := start(t, pool, readmodel.EventFilter{State: "dead", Text: "n"}, 20) // batches of 2, ten a second
	r.Wake()
	for {
		j, err := Get(ctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Requeued > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, err := Cancel(ctx, pool, id); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	j := waitState(t, pool, id, "cancelled")
	time.Sleep(500 * time.Millisecond) // five batches' time at its rate
	var requeued int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE state <> 'dead'`).Scan(&requeued); err != nil {
		t.Fatal(err)
	}
	if requeued != j.Requeued || requeued >= 200 {
		t.Errorf("after the cancel %d events left dead state, the replay recorded %d", requeued, j.Requeued)
	}
	var private *string
	if err := pool.QueryRow(ctx, `SELECT private::text FROM replays WHERE id = $1`, id).Scan(&private); err != nil || private != nil {
		t.Errorf("a cancelled replay keeps its private filter: %v %v", private, err)
	}
	if ok, _ := Cancel(ctx, pool, id); ok {
		t.Error("cancelling twice: the second reported a running replay")
	}
}

// TestJobsAreSeparate: cancelling one bulk replay leaves another running, and the
// other's progress is recorded on it alone.
func TestJobsAreSeparate(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 30, []*string{nil})
	a := start(t, pool, readmodel.EventFilter{State: "dead"}, MaxRate)
	b := start(t, pool, readmodel.EventFilter{State: "dead"}, MaxRate)
	if ok, err := Cancel(ctx, pool, a); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	if j, err := Get(ctx, pool, b); err != nil || j.State != "running" {
		t.Fatalf("the other replay after a cancel: %q (%v), want running", j.State, err)
	}
	var proc randomProcessor
	go proc.run(ctx, t, pool)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	r.Wake()
	if j := waitState(t, pool, b, "done"); j.Requeued != 30 {
		t.Errorf("the running replay requeued %d, want 30", j.Requeued)
	}
	if j, err := Get(ctx, pool, a); err != nil || j.State != "cancelled" || j.Requeued != 0 {
		t.Errorf("the cancelled replay after the other ran: %q, %d requeued (%v); want cancelled, 0", j.State, j.Requeued, err)
	}
}

// TestResumedOnceEach: a runner stopped in the middle (its process died) leaves the
// job to another once the lease runs out; between them every event is requeued
// once, and a runner that lost the lease records nothing.
func TestResumedOnceEach(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ids := deadEvents(t, pool, 100, []*string{ptr("+15550001"), ptr("+15550002"), nil})
	var proc randomProcessor
	var wg sync.WaitGroup
	wg.Go(func() { proc.run(ctx, t, pool) })
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, 100) // batches of 10
	a := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	actx, stopA := context.WithCancel(ctx)
	go a.RunNext(actx)
	for {
		j, err := Get(ctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Requeued >= 20+int64(rand.IntN(20)) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopA()
	// A's lease runs out; B takes over.
	if _, err := pool.Exec(ctx, `UPDATE replays SET locked_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	b := NewRunner(pool, zaptest.NewLogger(t), "runner-b")
	go b.Work(ctx, 50*time.Millisecond)
	for {
		var holder *string
		if err := pool.QueryRow(ctx, `SELECT locked_by FROM replays WHERE id = $1`, id).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		if holder != nil && *holder == "runner-b" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The runner that lost the job records nothing while the other runs it.
	if _, err := a.step(ctx, id, []int64{ids[0]}, ids[0]); !errors.Is(err, errLost) {
		t.Errorf("a step by the runner that lost the lease: %v, want errLost", err)
	}
	j := waitState(t, pool, id, "done")
	waitAllProcessed(t, pool)
	cancel()
	wg.Wait()
	if j.Requeued != 100 {
		t.Errorf("requeued %d, want 100", j.Requeued)
	}
	for _, id := range ids {
		if proc.times[id] != 1 {
			t.Errorf("event %d applied %d times, want once", id, proc.times[id])
		}
	}
}

// TestALiveLeaseIsLeftAlone: a job another runner holds under a live lease is not
// taken over (two runners would race on it until one lost its fence); once the lease
// runs out, it is.
func TestALiveLeaseIsLeftAlone(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 10, []*string{nil})
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, 100)
	hold := func(lease string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `UPDATE replays SET locked_by = 'runner-a', locked_until = now() + $2::interval WHERE id = $1`, id, lease); err != nil {
			t.Fatal(err)
		}
	}
	holder := func() string {
		t.Helper()
		var h string
		if err := pool.QueryRow(ctx, `SELECT locked_by FROM replays WHERE id = $1`, id).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	hold("1 hour")
	b := NewRunner(pool, zaptest.NewLogger(t), "runner-b")
	// A runner that took the job would run it until its context ended: bound it.
	bctx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if ran, err := b.RunNext(bctx); ran || err != nil || holder() != "runner-a" {
		t.Fatalf("RunNext beside a live lease = %v, %v, held by %s; want nothing run and runner-a's", ran, err, holder())
	}
	hold("-1 second")
	done := make(chan struct{})
	go func() { // runs the job until ctx ends: no processor applies its batches
		defer close(done)
		b.RunNext(ctx)
	}()
	pgtest.Eventually(t, "runner-b took over the job whose lease ran out", time.Minute, func() (bool, error) {
		return holder() == "runner-b", nil
	})
	cancel()
	<-done
}

// TestStepLocksTheJobFirst: a step takes the job's lock before any event's. A runner
// that stalls before its fence (here: blocked on the job's row) holds none of its
// batch, so a runner that takes the job over does not skip that batch; and the stalled
// step, fenced out, changes nothing.
func TestStepLocksTheJobFirst(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	ids := deadEvents(t, pool, 3, []*string{nil})
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, 100)
	if _, err := pool.Exec(ctx, `UPDATE replays SET locked_by = 'runner-a', locked_until = now() + interval '1 minute' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM replays WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	a := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	stepped := make(chan error, 1)
	go func() {
		_, err := a.step(ctx, id, ids, ids[len(ids)-1])
		stepped <- err
	}()
	pgtest.WaitLocked(t, pool, 1) // the step waits for the job's lock
	var free int
	if err := pool.QueryRow(ctx, `
SELECT count(*) FROM (SELECT id FROM inbound_events WHERE id = ANY($1) FOR UPDATE SKIP LOCKED) f`, ids).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free != len(ids) {
		t.Errorf("%d of the batch's %d events are free while the step waits for the job, want all", free, len(ids))
	}
	// The job is taken over while the step waits.
	if _, err := hold.Exec(ctx, `UPDATE replays SET locked_by = 'runner-b' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-stepped; !errors.Is(err, errLost) {
		t.Errorf("the stalled step: %v, want errLost", err)
	}
	if dead := deadIDs(t, pool); !slices.Equal(dead, ids) {
		t.Errorf("dead after the stalled step: %v, want %v (it changes nothing)", dead, ids)
	}
	if err := a.renew(ctx, pool, id); !errors.Is(err, errLost) {
		t.Errorf("renewing a lease taken over: %v, want errLost", err)
	}
}

// TestChecks: what a replay refuses.
func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		f     readmodel.EventFilter
		total int64
		rate  int
	}{
		{readmodel.EventFilter{State: "pending"}, 1, 10},
		{readmodel.EventFilter{}, 1, 10},
		{readmodel.EventFilter{State: "dead"}, MaxEvents + 1, 10},
		{readmodel.EventFilter{State: "dead"}, 0, 10},
		{readmodel.EventFilter{State: "dead"}, 1, MaxRate + 1},
		{readmodel.EventFilter{State: "dead"}, 1, 0},
		{readmodel.EventFilter{State: "dead", Provider: "nope"}, 1, 10},
	} {
		if _, err := Start(context.Background(), nil, tc.f, 1, tc.total, tc.rate, "admin"); err == nil {
			t.Errorf("%+v, %d events at %d/s: accepted", tc.f, tc.total, tc.rate)
		}
	}
}

// TestErrorFilter: a failures group's replay takes the dead events with that exact
// last error and no other, its runner reading the error back from the job.
func TestErrorFilter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 20, []*string{nil})
	if _, err := pool.Exec(ctx, `UPDATE inbound_events SET last_error = 'bang' WHERE id % 4 = 0`); err != nil {
		t.Fatal(err)
	}
	if j := replayToEnd(ctx, t, pool, readmodel.EventFilter{State: "dead", Error: "bang", HasError: true}); j.Requeued != 5 || j.Total != 5 || !j.Private {
		t.Errorf("requeued %d of %d (private %v), want the 5 with that error", j.Requeued, j.Total, j.Private)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE state = 'dead' AND last_error = 'boom'`).Scan(&left); err != nil || left != 15 {
		t.Errorf("%d events of the other cause still dead (%v), want 15", left, err)
	}
}

// TestPersonalFilters: a replay by contact or by text takes only the events that
// match, its runner reading the filter's personal part back from the job (it is not
// in the public filter), and once done it counts nothing as waiting, even when its
// last batch is requeued again by someone else.
func TestPersonalFilters(t *testing.T) {
	t.Parallel()
	// Events at even positions hold "even", those at odd positions are the second
	// contact's: each filter leaves the other half dead.
	for name, tc := range map[string]struct {
		f    readmodel.EventFilter
		left int // the positions left dead: i%2 == left
	}{
		"contact": {readmodel.EventFilter{State: "dead", Contacts: []string{"+15550000002"}}, 0},
		"text":    {readmodel.EventFilter{State: "dead", Text: "EVEN"}, 1}, // case-insensitive
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := pgtest.NewPool(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ids := deadEvents(t, pool, 20, []*string{ptr("+15550000001"), ptr("+15550000002")})
			j := replayToEnd(ctx, t, pool, tc.f)
			if j.Requeued != 10 || j.Total != 10 || !j.Private {
				t.Errorf("requeued %d of %d (private %v), want the 10 that match", j.Requeued, j.Total, j.Private)
			}
			var stillDead []int64
			for i, id := range ids {
				if i%2 == tc.left {
					stillDead = append(stillDead, id)
				}
			}
			if left := deadIDs(t, pool); !slices.Equal(left, stillDead) {
				t.Errorf("still dead: %v, want %v", left, stillDead)
			}
			cancel() // the stand-in processor stops: what is requeued now stays unattempted
			if _, err := processor.RequeueState(context.Background(), pool, "processed", "", 100); err != nil {
				t.Fatal(err)
			}
			if j, err := Get(context.Background(), pool, j.ID); err != nil || j.Waiting != 0 {
				t.Errorf("a done replay: waiting %d (%v), want 0", j.Waiting, err)
			}
		})
	}
}

// TestLaterEventsAreNotInIt: a replay takes the events its confirmation counted;
// events that die after it was confirmed are not in it, even when they match.
func TestLaterEventsAreNotInIt(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadEvents(t, pool, 10, []*string{nil})
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, MaxRate)
	if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload, state, attempts)
SELECT 'generic', 'later-' || g, '{}', 'dead', 5 FROM generate_series(1, 5) AS g`); err != nil {
		t.Fatal(err)
	}
	var proc randomProcessor
	go proc.run(ctx, t, pool)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	go r.Work(ctx, 50*time.Millisecond)
	r.Wake()
	if j := waitState(t, pool, id, "done"); j.Requeued != 10 {
		t.Errorf("requeued %d, want the 10 confirmed", j.Requeued)
	}
	var later int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE external_id LIKE 'later-%' AND state = 'dead'`).Scan(&later); err != nil || later != 5 {
		t.Errorf("%d of the 5 later events still dead (%v), want all", later, err)
	}
}

// TestCancelledStaysCancelled: a cancel records when the job ended, and a runner
// that reaches its end after the cancel cannot mark it done.
func TestCancelledStaysCancelled(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	deadEvents(t, pool, 3, []*string{nil})
	id := start(t, pool, readmodel.EventFilter{State: "dead"}, MaxRate)
	r := NewRunner(pool, zaptest.NewLogger(t), "runner-a")
	if _, err := pool.Exec(ctx, `UPDATE replays SET locked_by = 'runner-a' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if ok, err := Cancel(ctx, pool, id); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	if err := r.finish(ctx, id); !errors.Is(err, errLost) {
		t.Errorf("finish after the cancel: %v, want errLost", err)
	}
	if j, err := Get(ctx, pool, id); err != nil || j.State != "cancelled" || j.FinishedAt == nil {
		t.Errorf("after the cancel: %+v (%v), want cancelled with its end time", j, err)
	}
	if err := r.renew(ctx, pool, id); !errors.Is(err, errLost) {
		t.Errorf("renewing a cancelled job's lease: %v, want errLost", err)
	}
	// Its lease runs out: no runner takes it up again.
	if _, err := pool.Exec(ctx, `UPDATE replays SET locked_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.RunNext(ctx); ok || err != nil {
		t.Errorf("RunNext with only a cancelled job: %v %v, want nothing to run", ok, err)
	}
}

// TestPayloadFilterPastOneWindow: a payload condition is applied a window of
// readmodel.SearchWindow events at a time, and a window without a match neither ends
// the replay nor stops it (its empty batch was once refused as a NULL last_batch, and
// the job retried for ever): the events that match further on are replayed too.
func TestPayloadFilterPastOneWindow(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, last_error)
SELECT 'generic', 'w-' || i, CASE WHEN i > $1 THEN '{"n": "late"}' ELSE '{"n": "early"}' END::jsonb, 'dead', 5, 'boom'
FROM generate_series(1, $1 + 5) i`, readmodel.SearchWindow); err != nil {
		t.Fatal(err)
	}
	if j := replayToEnd(ctx, t, pool, readmodel.EventFilter{State: "dead", Path: `$.n ? (@ == "late")`}); j.Requeued != 5 {
		t.Errorf("requeued %d, want the 5 late events past the first window", j.Requeued)
	}
}
