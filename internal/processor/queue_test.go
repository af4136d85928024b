package processor

import (
	"context"
	"fmt"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// holder is a Processor that is not running: the tests drive its queue transitions
// by hand, as a process with that id would.
func holder(t *testing.T, pool *pgxpool.Pool, id string, lease time.Duration) *Processor {
	t.Helper()
	return New(pool, "", Config{ID: id, Lease: lease, MaxAttempts: 5}, zapNop(), NewMetrics(prometheus.NewRegistry()))
}

func mustClaim(t *testing.T, p *Processor, want int) []claimed {
	t.Helper()
	evs, err := p.claim(context.Background(), 10)
	if err != nil || len(evs) != want {
		t.Fatalf("%s claimed %d events (%v), want %d", p.cfg.ID, len(evs), err, want)
	}
	return evs
}

// TestFinishIsFenced: a holder whose claim is no longer its own cannot record an
// outcome, whichever way it lost it, and its metrics do not count one.
func TestFinishIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// lose makes a's claim on ev someone else's (or a later attempt's).
		lose func(t *testing.T, pool *pgxpool.Pool, a *Processor, ev claimed)
	}{
		{"another process rescued the expired lease", func(t *testing.T, pool *pgxpool.Pool, a *Processor, ev claimed) {
			time.Sleep(2 * a.cfg.Lease)
			if evs, err := holder(t, pool, "b", time.Minute).rescue(ctx); err != nil || len(evs) != 1 {
				t.Fatalf("b rescued %v (%v)", evs, err)
			}
		}},
		{"its own sweep rescued it for a later attempt", func(t *testing.T, pool *pgxpool.Pool, a *Processor, ev claimed) {
			time.Sleep(2 * a.cfg.Lease)
			if evs, err := a.rescue(ctx); err != nil || len(evs) != 1 {
				t.Fatalf("a rescued %v (%v)", evs, err)
			}
		}},
		{"it was released and claimed by another process", func(t *testing.T, pool *pgxpool.Pool, a *Processor, ev claimed) {
			if err := a.release(ctx, []claimed{ev}); err != nil {
				t.Fatal(err)
			}
			mustClaim(t, holder(t, pool, "b", time.Minute), 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, _ := newDB(t)
			insertEvents(t, pool, received("m-1", "hi", time.Now()))
			// The lease is also a's statement timeout (session.go): wide enough for a
			// claim's first planning on a busy machine, short enough to wait out.
			a := holder(t, pool, "a", 500*time.Millisecond)
			ev := mustClaim(t, a, 1)[0]
			tt.lose(t, pool, a, ev)
			out := a.decide(ev, nil)
			if finished, err := a.recordOutcomes(ctx, []outcome{out}); err != nil || len(finished) != 0 {
				t.Errorf("a's late finish changed %v (%v), want nothing", finished, err)
			}
			var state, by string
			pool.QueryRow(ctx, "SELECT state, COALESCE(locked_by, '') FROM inbound_events").Scan(&state, &by)
			if state != "processing" {
				t.Errorf("after a's late finish: %s by %q, want still processing", state, by)
			}
			a.report(context.Background(), []claimed{ev}, []outcome{out}, nil, time.Now())
			if n := testutil.ToFloat64(a.metrics.processed.WithLabelValues("generic", "processed")); n != 0 {
				t.Errorf("a counted %v processed for an outcome it did not record", n)
			}
		})
	}
}

// TestReleaseIsFenced: a process stopping gracefully hands back only the claims that
// are still its own. One whose lease expired and was taken over by another process
// stays with that process: handing it back would let a third claim it while the
// second is applying it, with the second's attempt uncounted.
func TestReleaseIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	insertEvents(t, pool, received("m-1", "hi", time.Now()))
	a := holder(t, pool, "a", 500*time.Millisecond) // see TestFinishIsFenced
	ev := mustClaim(t, a, 1)[0]
	time.Sleep(2 * a.cfg.Lease)
	if evs, err := holder(t, pool, "b", time.Minute).rescue(ctx); err != nil || len(evs) != 1 {
		t.Fatalf("b rescued %v (%v)", evs, err)
	}
	if err := a.release(ctx, []claimed{ev}); err != nil {
		t.Fatal(err)
	}
	var state, by string
	var attempts int
	if err := pool.QueryRow(ctx, "SELECT state, COALESCE(locked_by, ''), attempts FROM inbound_events").Scan(&state, &by, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != "processing" || by != "b" || attempts != 2 {
		t.Errorf("after a released a claim b had taken over: %s by %q, %d attempts; want processing by b, 2 attempts", state, by, attempts)
	}
}

// TestRetryRecordsContact: an event whose contact was read before its attempt failed
// carries the contact while it waits for a retry, so that an export of that contact
// finds it; a later attempt that fails before reading it (a lost batch) keeps it.
func TestRetryRecordsContact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	insertEvents(t, pool, received("m-1", "hi", time.Now()))
	a := holder(t, pool, "a", time.Minute)
	ev := mustClaim(t, a, 1)[0]
	out := a.decide(ev, fmt.Errorf("deadlock detected"))
	out.contact = "+15552223333"
	if finished, err := a.recordOutcomes(ctx, []outcome{out}); err != nil || len(finished) != 1 {
		t.Fatalf("recorded %v (%v), want the retry", finished, err)
	}
	if _, err := pool.Exec(ctx, "UPDATE inbound_events SET run_at = now()"); err != nil {
		t.Fatal(err) // the retry is due
	}
	ev = mustClaim(t, a, 1)[0]
	if _, err := a.recordOutcomes(ctx, []outcome{a.decide(ev, fmt.Errorf("conn closed"))}); err != nil {
		t.Fatal(err)
	}
	var state, contact string
	if err := pool.QueryRow(ctx, "SELECT state, COALESCE(contact, '') FROM inbound_events").Scan(&state, &contact); err != nil {
		t.Fatal(err)
	}
	if state != "pending" || contact != "+15552223333" {
		t.Errorf("after two failed attempts: %s, contact %q; want pending with the contact read in the first", state, contact)
	}
}

// TestTimedOutBatchIsRetriedWithBackoff: applying a batch that outlives its time (a
// table locked by a migration) records a retry with backoff and the real reason on a
// fresh deadline; the event is not left leased until a takeover, never called a
// crashed process's, and is processed once the lock is gone.
func TestTimedOutBatchIsRetriedWithBackoff(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(context.Background())
	if err == nil {
		_, err = tx.Exec(context.Background(), "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		t.Fatal(err)
	}
	// The batch's deadline is 3/4 of the lease: the quarter left is the time to record
	// the retry before the sweep may take the lease over, which a busy CI machine
	// needed more than 250 ms of.
	p := start(t, url, Config{Lease: 4 * time.Second, SweepInterval: 100 * time.Millisecond})
	insertEvents(t, pool, received("m-1", "hi", time.Now()))
	var lastErr string
	pgtest.Eventually(t, "a retry recorded while the table is locked", 20*time.Second, func() (bool, error) {
		err := pool.QueryRow(context.Background(), "SELECT COALESCE(last_error, '') FROM inbound_events WHERE state = 'pending' AND attempts = 1").Scan(&lastErr)
		return err == nil, err
	})
	tx.Rollback(context.Background())
	waitSettled(t, pool, 20*time.Second)
	var state string
	var attempts int
	pool.QueryRow(context.Background(), "SELECT state, attempts, last_error FROM inbound_events").Scan(&state, &attempts, &lastErr)
	if state != "processed" || strings.Contains(lastErr, "stopped") || !strings.Contains(lastErr, "applying its batch") {
		t.Errorf("%s after %d attempts, last error %q; want processed, the timeout as the reason, never a takeover", state, attempts, lastErr)
	}
	if n := testutil.ToFloat64(p.metrics.processed.WithLabelValues("generic", "retry")); n < 1 {
		t.Errorf("%v retries counted, want at least 1", n)
	}
}

// TestMessageAndStatusRace: a message and a status about it, applied at the same
// time by two transactions, end with the status applied and nothing parked, in either
// order: the advisory lock per message serializes them (without it, each would miss
// the other's uncommitted row and the status would stay parked for ever).
func TestMessageAndStatusRace(t *testing.T) {
	t.Parallel()
	for _, statusFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("status first %v", statusFirst), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, _ := newDB(t)
			t0 := time.Now()
			insertEvents(t, pool, sent("m-1", "+15552223333", t0), status("m-1", "delivered", t0.Add(time.Second)))
			evs := mustClaim(t, holder(t, pool, "a", time.Minute), 2)
			msg, st := evs[0], evs[1]
			if n, _ := normalize(registry.Normalizers(), msg); n.Message == nil {
				msg, st = st, msg
			}
			if statusFirst {
				msg, st = st, msg
			}
			first, second := apply(t, pool, msg), apply(t, pool, st)
			tx1 := first()
			done := make(chan error, 1)
			go func() { done <- second()() }()
			waitBlockedOrDone(t, pool, done)
			if err := tx1(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var got string
			var parked int
			pool.QueryRow(ctx, "SELECT status FROM messages").Scan(&got)
			pool.QueryRow(ctx, "SELECT count(*) FROM pending_statuses").Scan(&parked)
			if got != "delivered" || parked != 0 {
				t.Errorf("message %q with %d parked statuses, want delivered and none parked", got, parked)
			}
		})
	}
}

// apply returns a function that begins a transaction and applies ev in it, returning
// the function that commits it.
func apply(t *testing.T, pool *pgxpool.Pool, ev claimed) func() func() error {
	return func() func() error {
		ctx := context.Background()
		n, err := normalize(registry.Normalizers(), ev)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := pool.Begin(ctx)
		if err == nil {
			err = sendApply(ctx, tx, []claimed{ev}, []provider.Normalized{n}, nil)
		}
		if err != nil {
			return func() error { return err }
		}
		return func() error { return tx.Commit(ctx) }
	}
}

// waitBlockedOrDone waits until a backend waits on an advisory lock, or done has a
// value (then it is put back).
func waitBlockedOrDone(t *testing.T, pool *pgxpool.Pool, done chan error) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err
			return
		default:
		}
		var waiting bool
		pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory')`).Scan(&waiting)
		if waiting {
			return
		}
	}
	t.Fatal("the second transaction neither finished nor waited")
}

// TestNoLostWakeUp: a wake-up that arrives while the only claimer is busy only sets
// pending (no idle worker is woken while one claims); the claimer must see pending and
// claim again, or the event waits for the next sweep (an hour here). Two moments:
// right after a claim (the claimer checks pending before deciding to go idle), and
// after it decided, just before it counts itself out (it checks pending again after
// counting itself out, when a Wake would find no claimer and wake an idle worker).
// The hooks make the timing exact: at that moment the retry timer of "later" becomes
// due, as a backoff timer would.
func TestNoLostWakeUp(t *testing.T) {
	t.Parallel()
	for _, at := range []string{"after a claim", "going idle"} {
		t.Run(at, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, url := newDB(t)
			t0 := time.Now()
			insertEvents(t, pool, received("later", "due in an hour", t0))
			if _, err := pool.Exec(ctx, "UPDATE inbound_events SET run_at = now() + interval '1 hour'"); err != nil {
				t.Fatal(err)
			}
			var armed, claimedNow, fired atomic.Bool
			fire := func(p *Processor) {
				if _, err := pool.Exec(ctx, "UPDATE inbound_events SET run_at = now() WHERE payload->'data'->>'message_id' = 'later'"); err != nil {
					t.Error(err)
				}
				p.Wake()
				if !p.pending.Load() || len(p.wake) != 0 {
					t.Error("a wake-up while a worker claims woke an idle worker")
				}
				fired.Store(true)
			}
			p := startConfigured(t, url, Config{SweepInterval: time.Hour, Workers: 4}, func(p *Processor) {
				p.afterClaim = func(n int) {
					if n != 1 || !armed.CompareAndSwap(true, false) {
						return
					}
					if at == "after a claim" {
						fire(p)
					} else {
						claimedNow.Store(true)
					}
				}
				p.beforeIdle = func() {
					if at == "going idle" && claimedNow.CompareAndSwap(true, false) {
						fire(p)
					}
				}
			})
			pgtest.Eventually(t, "listener connected", 10*time.Second, func() (bool, error) { return p.ListenerConnected(), nil })
			pgtest.Eventually(t, "workers idle", 10*time.Second, func() (bool, error) { return p.active.Load() == 0 && len(p.wake) == 0, nil })
			armed.Store(true)
			insertEvents(t, pool, received("now", "hi", t0))
			pgtest.Eventually(t, "the hook fired", 10*time.Second, func() (bool, error) { return fired.Load(), nil })
			pgtest.Eventually(t, "the event that became due is processed without a sweep", 5*time.Second, func() (bool, error) {
				var n int
				err := pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state = 'processed'").Scan(&n)
				return n == 2, err
			})
		})
	}
}

// TestBatchWait: events announced by notification (other processes' commits) wait for
// others to share their claim: with a BatchWait far longer than the test, three stay
// pending, and the fourth, a batch's worth, has all four claimed together at once.
// Events this process's ingest committed (Committed) are claimed without waiting:
// the commit gathered them already.
func TestBatchWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, url := newDB(t)
	p, reg := startWithRegistry(t, url, Config{BatchSize: 4, BatchWait: time.Hour, SweepInterval: time.Hour})
	pgtest.Eventually(t, "listener connected", 10*time.Second, func() (bool, error) { return p.ListenerConnected(), nil })
	pgtest.Eventually(t, "the first claim at start", 10*time.Second, func() (bool, error) { return p.claimedAt.Load() != 0, nil })
	// Begun is not done: a start-up claim whose query ran after the first insert would
	// take that event. Wait until it has come back empty.
	pgtest.Eventually(t, "the start-up claim is over", 10*time.Second, func() (bool, error) {
		return counter(t, reg, "inbox_claims_total", "empty") >= 1, nil
	})
	t0 := time.Now()
	processed := func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state = 'processed'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 3 {
		insertEvents(t, pool, received(fmt.Sprintf("m-%d", i), "hi", t0))
	}
	time.Sleep(300 * time.Millisecond)
	if n := processed(); n != 0 {
		t.Fatalf("%d of 3 notified events processed within BatchWait, want them waiting for a batch's worth", n)
	}
	insertEvents(t, pool, received("m-3", "hi", t0))
	pgtest.Eventually(t, "a batch's worth claimed at once", 5*time.Second, func() (bool, error) { return processed() == 4, nil })
	if full := counter(t, reg, "inbox_claims_total", "events"); full != 1 {
		t.Errorf("%v claims found events, want the four in one", full)
	}

	insertEvents(t, pool, received("m-4", "committed here", t0))
	p.Committed(1)
	pgtest.Eventually(t, "an event this process committed claimed at once", 5*time.Second, func() (bool, error) { return processed() == 5, nil })
}

// TestAppliesTakeLocksInOneOrder: two applies of the same messages, their events in
// opposite orders (a message and its redelivery claimed by two workers, each batch
// in its own order), both commit. queueApply sorts the message locks, so both take
// them in one order; unsorted, each holds locks the other waits for, and Postgres
// aborts one as a deadlock. The middle message's lock is held first, so that both
// applies are under way, each waiting, when it is let go.
func TestAppliesTakeLocksInOneOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	const n = 20
	id := func(k int) string { return fmt.Sprintf("m%03d", k) }
	batch := func(reverse bool, firstID int64) ([]claimed, []provider.Normalized) {
		evs, norms := make([]claimed, n), make([]provider.Normalized, n)
		for i := range n {
			k := i
			if reverse {
				k = n - 1 - i
			}
			evs[i] = claimed{ID: firstID + int64(i), Provider: "generic", ReceivedAt: time.Now(),
				Payload: []byte(received(id(k), "hi", time.Now()))}
			var err error
			if norms[i], err = normalize(registry.Normalizers(), evs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return evs, norms
	}
	apply := func(reverse bool, firstID int64) func() error {
		evs, norms := batch(reverse, firstID)
		return func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return sendApply(ctx, tx, evs, norms, nil) })
		}
	}
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", messageLockID("generic", id(n/2)))
		return err
	}, false, apply(false, 1), apply(true, n+1))
	var got int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&got); err != nil || got != n {
		t.Errorf("stored %d messages (%v), want %d, each once", got, err, n)
	}
}

// TestApplyAndErasureTakeContactLocksInOneOrder: an apply touching two contacts and
// an erasure locking both (a contact's address and its hashed form, say) both end,
// whatever order each was given them in: contact locks are taken sorted, so the
// apply's shared locks and the erasure's exclusive ones cannot wait on each other in
// a cycle. The higher lock is held first, so that both are under way, each waiting,
// when it is let go.
func TestApplyAndErasureTakeContactLocksInOneOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	hi, lo := "+15550000001", "+15550000002"
	if contactLockID(hi) < contactLockID(lo) {
		hi, lo = lo, hi
	}
	var evs []claimed
	var norms []provider.Normalized
	for i, contact := range []string{hi, lo} {
		ev := claimed{ID: int64(i + 1), Provider: "generic", ReceivedAt: time.Now(), Payload: []byte(sent(fmt.Sprintf("m%d", i), contact, time.Now()))}
		n, err := normalize(registry.Normalizers(), ev)
		if err != nil {
			t.Fatal(err)
		}
		evs, norms = append(evs, ev), append(norms, n)
	}
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1::int, $2::int)", contactLockSpace, contactLockID(hi))
		return err
	}, false,
		func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return sendApply(ctx, tx, evs, norms, nil) })
		},
		func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return LockContacts(ctx, tx, []string{lo, hi}) })
		})
}

// TestRequeueAnnounces: a replay announces each event it puts back on the
// inbound_events channel, as an arrival is, so that processors (and a DBA's LISTEN)
// see it at once rather than at the next sweep; an event it leaves alone (not
// finished) is not announced.
func TestRequeueAnnounces(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	insertEvents(t, pool, received("m-1", "hi", time.Now()), received("m-2", "hi", time.Now()))
	var dead, pending int64
	if err := pool.QueryRow(ctx, `
WITH d AS (UPDATE inbound_events SET state = 'dead' WHERE id = (SELECT min(id) FROM inbound_events) RETURNING id)
SELECT (SELECT id FROM d), (SELECT max(id) FROM inbound_events)`).Scan(&dead, &pending); err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Listen(t, url, "inbound_events")
	if n, err := Requeue(ctx, pool, []int64{dead, pending}); err != nil || n != 1 {
		t.Fatalf("requeued %d (%v), want the dead one", n, err)
	}
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if want := fmt.Sprintf(`{"id":%d,"provider":"generic"}`, dead); n.Payload != want {
		t.Errorf("notification %s, want %s", n.Payload, want)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil { // any further notification arrives with this
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 100*time.Millisecond)
	defer stop()
	if n, err := conn.WaitForNotification(short); err == nil {
		t.Errorf("a second notification, %s, for an event not requeued", n.Payload)
	}
}
