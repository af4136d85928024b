package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/feed"
	"inboxd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// allTypes subscribes to every change type.
var allTypes = feed.Types

// addChanges commits one change per conversation given, each in its own transaction
// (as the processor's batches do): a conversation.created carrying its copy, which
// needs no message.
func addChanges(t *testing.T, pool *pgxpool.Pool, conversations ...int64) {
	t.Helper()
	for _, c := range conversations {
		if _, err := pool.Exec(context.Background(), `INSERT INTO changes (type, conversation_id, data) VALUES ('conversation.created', $1, jsonb_build_object('id', $1::bigint))`, c); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFinal waits until every change is below every transaction still open on the
// server (other packages' tests run beside this one): until the feed's head is the
// last change.
func waitFinal(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	pgtest.Eventually(t, "the changes below every open transaction", time.Minute, func() (bool, error) {
		var final bool
		err := pool.QueryRow(context.Background(), `SELECT pg_snapshot_xmin(pg_current_snapshot()) > (SELECT max(xid) FROM changes)`).Scan(&final)
		return final, err
	})
}

// changeIDs lists the ids of the changes kept, in feed order, by conversation.
func changeIDs(t *testing.T, pool *pgxpool.Pool) map[int64][]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT conversation_id, xid::text || '.' || seq FROM changes ORDER BY xid, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64][]string{}
	for rows.Next() {
		var c int64
		var id string
		if err := rows.Scan(&c, &id); err != nil {
			t.Fatal(err)
		}
		out[c] = append(out[c], id)
	}
	return out
}

// start runs a deliverer (a process) until the test ends.
func start(t *testing.T, pool *pgxpool.Pool, cfg Config) *Deliverer {
	t.Helper()
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 100 * time.Millisecond
	}
	d := New(pool, cfg, zaptest.NewLogger(t), NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// subscribe makes a subscription of the receiver.
func subscribe(t *testing.T, pool *pgxpool.Pool, rc *deliverytest.Receiver, types ...string) Subscription {
	t.Helper()
	if len(types) == 0 {
		types = allTypes
	}
	s, err := Create(context.Background(), pool, rc.URL+"/hooks", types, true)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetSecret(s.Secret)
	return s
}

func waitDelivered(t *testing.T, rc *deliverytest.Receiver, n int, within time.Duration) {
	t.Helper()
	pgtest.Eventually(t, fmt.Sprintf("%d changes delivered", n), within, func() (bool, error) {
		return len(rc.Delivered()) >= n, nil
	})
}

// checkOrder fails unless each conversation's changes were delivered (first 2xx)
// in feed order, every one of them, each signed with the subscription's secret.
func checkOrder(t *testing.T, rc *deliverytest.Receiver, want map[int64][]string) {
	t.Helper()
	got := map[int64][]string{}
	for _, r := range rc.Delivered() {
		got[r.ConversationID] = append(got[r.ConversationID], r.ID)
		if !r.Verified {
			t.Errorf("change %s: the Standard Webhooks library did not verify its signature", r.ID)
		}
	}
	for c, ids := range want {
		if !slices.Equal(got[c], ids) {
			t.Errorf("conversation %d: delivered %v, want %v (feed order, each once)", c, got[c], ids)
		}
	}
}

// TestInOrderPerConversation: two processes deliver changes of ten conversations to
// an endpoint that is slow at random and fails a third of first attempts. Every
// change arrives, signed, and each conversation's changes are acknowledged in feed
// order (a retried change holds back its conversation's later ones, not the others),
// each once: a finish is fenced, a fan-out by two processes makes one delivery.
func TestInOrderPerConversation(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	rc.Answer(func(r *http.Request, id string, attempt int) (int, http.Header) {
		time.Sleep(time.Duration(rand.N(15)) * time.Millisecond)
		if attempt == 1 && rand.N(3) == 0 {
			return http.StatusInternalServerError, nil
		}
		return http.StatusOK, nil
	})
	subscribe(t, pool, rc)
	d1, d2 := start(t, pool, Config{AllowPrivate: true}), start(t, pool, Config{AllowPrivate: true})
	const total = 200
	for i := range total / 10 {
		var convs []int64
		for c := range 10 {
			convs = append(convs, int64((c+i)%10+1))
		}
		addChanges(t, pool, convs...)
		d1.Wake()
		d2.Wake()
	}
	waitDelivered(t, rc, total, 2*time.Minute)
	checkOrder(t, rc, changeIDs(t, pool))
	counts := map[string]int{}
	for _, r := range rc.Got() {
		if r.Status/100 == 2 {
			counts[r.ID]++
		}
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("change %s acknowledged %d times, want once (nothing crashed)", id, n)
		}
	}
}

// newIdle is a deliverer that does not run: the test drives it (a process that
// claims and then stops, say).
func newIdle(t *testing.T, pool *pgxpool.Pool, cfg Config) *Deliverer {
	t.Helper()
	return New(pool, cfg, zaptest.NewLogger(t), NewMetrics(prometheus.NewRegistry()))
}

func deliveryState(t *testing.T, pool *pgxpool.Pool, id int64) (state string, attempts int) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT state, attempts FROM deliveries WHERE id = $1`, id).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	return state, attempts
}

// TestExpiredLeaseIsTakenOver: a process claims a delivery and stops (kill -9) before
// it records an outcome; when the lease ends, another process's sweep makes it
// pending and delivers it. The first process's late outcome is then refused (the
// fence), so it cannot turn the delivered change back into a retry.
func TestExpiredLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	subscribe(t, pool, rc)
	addChanges(t, pool, 1)
	dead := newIdle(t, pool, Config{AllowPrivate: true, ID: "dead-process"})
	var claimed []claimed
	// The change is final once every older transaction on the server has ended
	// (other tests' included): fan out and claim until it is.
	pgtest.Eventually(t, "the change fanned out and claimed", time.Minute, func() (bool, error) {
		if err := dead.fanOutAll(ctx); err != nil {
			return false, err
		}
		var err error
		claimed, err = dead.claim(ctx, 10)
		return len(claimed) == 1, err
	})
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET run_at = now() - interval '1 second' WHERE id = $1`, claimed[0].ID); err != nil {
		t.Fatal(err) // the lease ends
	}
	start(t, pool, Config{AllowPrivate: true, ID: "live-process"})
	waitDelivered(t, rc, 1, time.Minute)
	pgtest.Eventually(t, "the delivery recorded as delivered", time.Minute, func() (bool, error) {
		state, _ := deliveryState(t, pool, claimed[0].ID)
		return state == "delivered", nil
	})
	if err := dead.finish(ctx, []attempt{{claimed[0], result{err: "late failure", retry: true}}}); err != nil {
		t.Fatal(err)
	}
	if state, attempts := deliveryState(t, pool, claimed[0].ID); state != "delivered" || attempts != 2 {
		t.Errorf("after the first holder's late outcome: %s after %d attempts, want delivered after 2", state, attempts)
	}
}

// claimOne fans out and claims until d holds one delivery: a change is final once
// every older transaction on the server has ended (other tests' included).
func claimOne(t *testing.T, d *Deliverer) claimed {
	t.Helper()
	var got []claimed
	pgtest.Eventually(t, d.cfg.ID+" claimed a delivery", time.Minute, func() (bool, error) {
		if err := d.fanOutAll(context.Background()); err != nil {
			return false, err
		}
		var err error
		got, err = d.claim(context.Background(), 10)
		return len(got) == 1, err
	})
	return got[0]
}

// fanOutUntil fans out until the database holds n deliveries: a change is final
// once every older transaction on the server has ended (other tests' included).
func fanOutUntil(t *testing.T, pool *pgxpool.Pool, d *Deliverer, n int) {
	t.Helper()
	pgtest.Eventually(t, fmt.Sprintf("%d deliveries fanned out", n), time.Minute, func() (bool, error) {
		if err := d.fanOutAll(context.Background()); err != nil {
			return false, err
		}
		var got int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM deliveries`).Scan(&got)
		return got == n, err
	})
}

// oneChange is a database with a subscription (to a receiver that answers 2xx) and
// one change to deliver.
func oneChange(t *testing.T) (*pgxpool.Pool, Subscription) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	sub := subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1)
	return pool, sub
}

// TestLateOutcomeIsFenced: a holder whose claim is no longer its own cannot record
// an outcome, whichever way it lost it: the delivery stays with its new holder.
func TestLateOutcomeIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	expire := func(t *testing.T, pool *pgxpool.Pool, id int64) {
		t.Helper()
		if _, err := pool.Exec(ctx, `UPDATE deliveries SET run_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		// lose makes a's claim someone else's, or a later attempt's, and returns who
		// holds it now and at which attempt.
		lose func(t *testing.T, pool *pgxpool.Pool, sub Subscription, a *Deliverer, first claimed) (string, int)
	}{
		{"its own sweep rescued it and it claimed it again", func(t *testing.T, pool *pgxpool.Pool, _ Subscription, a *Deliverer, first claimed) (string, int) {
			expire(t, pool, first.ID)
			a.sweep(ctx)
			return "a", claimOne(t, a).Attempts
		}},
		{"another delivered it, a replay made it new, and a third holds it at the same attempt", func(t *testing.T, pool *pgxpool.Pool, sub Subscription, _ *Deliverer, first claimed) (string, int) {
			expire(t, pool, first.ID)
			b := newIdle(t, pool, Config{AllowPrivate: true, ID: "b"})
			b.sweep(ctx)
			if err := b.finish(ctx, []attempt{{claimOne(t, b), result{}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := Replay(ctx, pool, sub.ID, ""); err != nil {
				t.Fatal(err)
			}
			return "c", claimOne(t, newIdle(t, pool, Config{AllowPrivate: true, ID: "c"})).Attempts
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, sub := oneChange(t)
			a := newIdle(t, pool, Config{AllowPrivate: true, ID: "a"})
			first := claimOne(t, a)
			holder, attempts := tt.lose(t, pool, sub, a, first)
			if err := a.finish(ctx, []attempt{{first, result{err: "late failure", retry: true}}}); err != nil {
				t.Fatal(err)
			}
			var state, by string
			var n int
			if err := pool.QueryRow(ctx, `SELECT state, COALESCE(locked_by, ''), attempts FROM deliveries WHERE id = $1`, first.ID).Scan(&state, &by, &n); err != nil {
				t.Fatal(err)
			}
			if state != "delivering" || by != holder || n != attempts {
				t.Errorf("after a's late outcome: %s by %q at attempt %d, want delivering by %s at attempt %d", state, by, n, holder, attempts)
			}
		})
	}
}

// TestFanOutIsOneProcessAtATime: while another process fans a subscription out (it
// holds the subscription's fan-out lock), this one leaves it alone rather than
// reading the same cursor and making the same deliveries, which would undo those
// already delivered; it fans out once the other is done.
func TestFanOutIsOneProcessAtATime(t *testing.T) {
	t.Parallel()
	pool, sub := oneChange(t)
	ctx := context.Background()
	pgtest.Eventually(t, "the change final (every older transaction ended)", time.Minute, func() (bool, error) {
		var final bool
		err := pool.QueryRow(ctx, `SELECT bool_and(xid < pg_snapshot_xmin(pg_current_snapshot())) FROM changes`).Scan(&final)
		return final, err
	})
	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, $2::int)`, fanoutLockSpace, sub.ID); err != nil {
		t.Fatal(err)
	}
	d := newIdle(t, pool, Config{AllowPrivate: true})
	count := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n, err := d.fanOut(ctx, sub.ID); err != nil || n != 0 || count() != 0 {
		t.Fatalf("fanned out %d changes (%v, %d deliveries) while another process held the lock, want none", n, err, count())
	}
	other.Rollback(ctx)
	claimOne(t, d)
}

// TestReplayLeavesInFlightAlone: a replay over a change whose delivery is in flight
// leaves that delivery with its holder, rather than making it pending again (to be
// sent a second time while the first is still on its way) or letting the late outcome
// be refused.
func TestReplayLeavesInFlightAlone(t *testing.T) {
	t.Parallel()
	pool, sub := oneChange(t)
	ctx := context.Background()
	a := newIdle(t, pool, Config{AllowPrivate: true, ID: "a"})
	c := claimOne(t, a)
	if _, err := Replay(ctx, pool, sub.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.fanOutAll(ctx); err != nil {
		t.Fatal(err)
	}
	if state, attempts := deliveryState(t, pool, c.ID); state != "delivering" || attempts != 1 {
		t.Errorf("after a replay: %s after %d attempts, want still delivering, attempt 1", state, attempts)
	}
	if err := a.finish(ctx, []attempt{{c, result{}}}); err != nil {
		t.Fatal(err)
	}
	if state, _ := deliveryState(t, pool, c.ID); state != "delivered" {
		t.Errorf("the holder's outcome after a replay: %s, want delivered", state)
	}
}

// TestGiveUpPromotesTheNextYoungOne: when the give-up time ends a conversation's
// pending delivery and a waiting one as old, its oldest waiting delivery still within
// the give-up time goes out (not a later one); it is not left waiting behind
// deliveries that are dead. A dead delivery keeps the error of its last attempt
// before the give-up's. The listing shows a next attempt for the pending delivery
// only.
func TestGiveUpPromotesTheNextYoungOne(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 1, 1, 1)
	d := newIdle(t, pool, Config{AllowPrivate: true, GiveUp: 10 * time.Minute})
	fanOutUntil(t, pool, d, 4)
	if _, err := pool.Exec(ctx, `
UPDATE deliveries SET since = now() - interval '1 hour',
                      last_error = CASE WHEN state = 'pending' THEN 'HTTP 502 Bad Gateway' END
WHERE id IN (SELECT id FROM deliveries ORDER BY change_xid, change_seq LIMIT 2)`); err != nil {
		t.Fatal(err)
	}
	if err := d.giveUpExpired(ctx); err != nil {
		t.Fatal(err)
	}
	var states, errs []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(state ORDER BY change_xid, change_seq), array_agg(coalesce(last_error, '') ORDER BY change_xid, change_seq) FROM deliveries`).Scan(&states, &errs); err != nil {
		t.Fatal(err)
	}
	if want := []string{"dead", "dead", "pending", "waiting"}; !slices.Equal(states, want) {
		t.Errorf("after the give-up: %v, want %v", states, want)
	}
	if !strings.HasPrefix(errs[0], "HTTP 502 Bad Gateway; given up: not delivered within 10m0s") {
		t.Errorf("the dead delivery's error: %q, want its last attempt's, then the give-up's", errs[0])
	}
	list, err := Deliveries(ctx, pool, sub.ID, "", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if (l.NextAttemptAt != nil) != (l.State == "pending") {
			t.Errorf("a %s delivery lists its next attempt at %v; want one only when pending", l.State, l.NextAttemptAt)
		}
	}
}

// TestGiveUpWaitsForAFinish: a give-up takes the conversation's order lock, so that
// it runs after a finish of the same conversation holding it, and sees what the
// finish did. The finish here delivers the head and promotes the next delivery (as
// old as the head: the give-up makes it dead); the give-up then promotes the young
// one behind it. Run beside the finish without the lock, it would wait only for the
// rows, decide from what it saw before the finish committed (a head still pending),
// and leave the young delivery waiting with nothing ahead of it.
func TestGiveUpWaitsForAFinish(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 1, 1)
	d := newIdle(t, pool, Config{AllowPrivate: true, GiveUp: 10 * time.Minute})
	fanOutUntil(t, pool, d, 3)
	var ids []int64
	if err := pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY change_xid, change_seq) FROM deliveries`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET since = now() - interval '1 hour' WHERE id = ANY($1)`, ids[:2]); err != nil {
		t.Fatal(err)
	}
	finish := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockOrders, []int32{orderKey(sub.ID, 1)}, orderLockSpace); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
UPDATE deliveries SET state = CASE id WHEN $1 THEN 'delivered' ELSE 'pending' END WHERE id IN ($1, $2)`, ids[0], ids[1])
		return err
	}
	pgtest.LineUp(t, pool, finish, true, func() error { return d.giveUpExpired(ctx) })
	var states []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(state ORDER BY change_xid, change_seq) FROM deliveries`).Scan(&states); err != nil {
		t.Fatal(err)
	}
	if want := []string{"delivered", "dead", "pending"}; !slices.Equal(states, want) {
		t.Errorf("after a finish and a give-up: %v, want %v", states, want)
	}
}

// TestFinishPromotesOnlyAlone: when a conversation's delivery is done, its next
// waiting one becomes pending only if no other delivery of the conversation is
// pending or in flight (however one came to be: a replay, a rescue): one at a time per
// conversation is what keeps an endpoint's deliveries in order.
func TestFinishPromotesOnlyAlone(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 1, 1)
	d := newIdle(t, pool, Config{AllowPrivate: true})
	first := claimOne(t, d)
	fanOutUntil(t, pool, d, 3)
	states := func() []string {
		t.Helper()
		var s []string
		if err := pool.QueryRow(ctx, `SELECT array_agg(state ORDER BY change_xid, change_seq) FROM deliveries`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, want := states(), []string{"delivering", "waiting", "waiting"}; !slices.Equal(got, want) {
		t.Fatalf("after the first claim: %v, want %v", got, want)
	}
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET state = 'pending'
WHERE id = (SELECT id FROM deliveries WHERE state = 'waiting' ORDER BY change_xid, change_seq LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if err := d.finish(ctx, []attempt{{first, result{}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := states(), []string{"delivered", "pending", "waiting"}; !slices.Equal(got, want) {
		t.Errorf("after the first was delivered beside a pending second: %v, want %v (the third still waiting)", got, want)
	}
}

// TestRescueEndsTheLease: the sweep makes a delivery whose lease ended pending again,
// held by no process, with an error naming the process and the attempt.
func TestRescueEndsTheLease(t *testing.T) {
	t.Parallel()
	pool, _ := oneChange(t)
	ctx := context.Background()
	d := newIdle(t, pool, Config{AllowPrivate: true, ID: "stopped-process"})
	c := claimOne(t, d)
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET run_at = now() - interval '1 second' WHERE id = $1`, c.ID); err != nil {
		t.Fatal(err)
	}
	d.sweep(ctx)
	var state string
	var lockedBy, lastError *string
	if err := pool.QueryRow(ctx, `SELECT state, locked_by, last_error FROM deliveries WHERE id = $1`, c.ID).Scan(&state, &lockedBy, &lastError); err != nil {
		t.Fatal(err)
	}
	if state != "pending" || lockedBy != nil || lastError == nil || !strings.HasPrefix(*lastError, "lease of stopped-process expired during attempt 1") {
		t.Errorf("after the rescue: %s, locked by %v, error %v; want pending, held by none, the lease's error", state, lockedBy, lastError)
	}
}

// TestNewSubscriptionStartsBelowOpenTransactions: a subscription made while an older
// transaction is still writing a change starts below that change, not at the last
// change committed, and so gets it when it commits.
func TestNewSubscriptionStartsBelowOpenTransactions(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var open uint64
	if err := tx.QueryRow(ctx, `
INSERT INTO changes (type, conversation_id, data) VALUES ('conversation.created', 1, '{"id": 1}')
RETURNING xid::text::bigint`).Scan(&open); err != nil {
		t.Fatal(err)
	}
	addChanges(t, pool, 2) // committed first, with a later xid
	rc := deliverytest.New(t)
	s := subscribe(t, pool, rc)
	if c, err := feed.ParseCursor(s.Cursor); err != nil || c.XID >= open {
		t.Errorf("a subscription made beside the open transaction %d starts at %s (%v), want below it", open, s.Cursor, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	start(t, pool, Config{AllowPrivate: true})
	waitDelivered(t, rc, 2, time.Minute)
	checkOrder(t, rc, changeIDs(t, pool))
}

// TestLagIsTheOldestUndelivered: the lag gauge is the age of the oldest change not
// yet delivered, whatever older changes were delivered.
func TestLagIsTheOldestUndelivered(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 2)
	d := newIdle(t, pool, Config{AllowPrivate: true})
	fanOutUntil(t, pool, d, 2)
	if _, err := pool.Exec(ctx, `
WITH first AS (SELECT id, change_xid, change_seq FROM deliveries ORDER BY change_xid, change_seq LIMIT 1),
     delivered AS (UPDATE deliveries SET state = 'delivered', delivered_at = now() WHERE id = (SELECT id FROM first))
UPDATE changes SET occurred_at = now() - interval '1 hour'
WHERE (xid, seq) = (SELECT change_xid, change_seq FROM first)`); err != nil {
		t.Fatal(err)
	}
	if err := d.metrics.readLag(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if lag := testutil.ToFloat64(d.metrics.lag.WithLabelValues(strconv.FormatInt(sub.ID, 10))); lag < 0 || lag > 600 {
		t.Errorf("lag %.0f s with an hour-old change delivered and a new one not, want the new one's age", lag)
	}
}

// TestLagCountsWhatAPausedSubscriptionIsOwed: a paused subscription is not fanned
// out, so what it is owed has no deliveries; its lag is still the age of the oldest
// change after its position (retention keeps those for it), not 0.
func TestLagCountsWhatAPausedSubscriptionIsOwed(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	if _, err := Pause(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	addChanges(t, pool, 1, 2)
	if _, err := pool.Exec(ctx, `UPDATE changes SET occurred_at = now() - interval '1 hour' WHERE conversation_id = 1`); err != nil {
		t.Fatal(err)
	}
	d := newIdle(t, pool, Config{AllowPrivate: true})
	if err := d.metrics.readLag(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if lag := testutil.ToFloat64(d.metrics.lag.WithLabelValues(strconv.FormatInt(sub.ID, 10))); lag < 3500 || lag > 4000 {
		t.Errorf("lag %.0f s of a paused subscription owed an hour-old change, want about 3600", lag)
	}
}

// TestRetryAfter: an endpoint that answers 429 with Retry-After: 2 is not called
// again for that change before two seconds have passed (Backoff alone would retry
// within one), and the change is then delivered with the same webhook-id.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	rc.Answer(func(r *http.Request, id string, attempt int) (int, http.Header) {
		if attempt == 1 {
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"2"}}
		}
		return http.StatusOK, nil
	})
	subscribe(t, pool, rc)
	addChanges(t, pool, 1)
	start(t, pool, Config{AllowPrivate: true})
	waitDelivered(t, rc, 1, time.Minute)
	got := rc.Got()
	if len(got) != 2 || got[0].ID != got[1].ID {
		t.Fatalf("got %+v, want a 429 and then a 2xx of the same change", got)
	}
	if gap := got[1].At.Sub(got[0].At); gap < 2*time.Second {
		t.Errorf("retried %v after the 429, want at least Retry-After's 2s", gap)
	}
}

// TestRetryPastGiveUpIsDead: a failed attempt whose retry would come after the
// give-up time (the endpoint asked for an hour, the give-up is ten minutes) makes the
// delivery dead at once, with the endpoint's answer, rather than pending until the
// give-up time only to be declared dead then.
func TestRetryPastGiveUpIsDead(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	rc.Answer(func(*http.Request, string, int) (int, http.Header) {
		return http.StatusTooManyRequests, http.Header{"Retry-After": {"3600"}}
	})
	sub := subscribe(t, pool, rc)
	addChanges(t, pool, 1)
	start(t, pool, Config{AllowPrivate: true, GiveUp: 10 * time.Minute})
	pgtest.Eventually(t, "the delivery dead after its first attempt", time.Minute, func() (bool, error) {
		dead, err := Deliveries(context.Background(), pool, sub.ID, "dead", 0, 10)
		return len(dead) == 1 && dead[0].Attempts == 1 && dead[0].LastError != nil && strings.Contains(*dead[0].LastError, "answered 429"), err
	})
}

// TestHalfOpenBreakerSendsOneProbe: once an open breaker's period has passed, a
// subscription at the failure threshold gets one delivery, a probe, and no other
// while the probe is in flight, however much room PerSubscription leaves; closed,
// it gets PerSubscription at once.
func TestHalfOpenBreakerSendsOneProbe(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	d := newIdle(t, pool, Config{AllowPrivate: true, PerSubscription: 4})
	fanOutUntil(t, pool, d, 10)
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET failures = $1, blocked_until = now() - interval '1 second'`, breakerAfter); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0} {
		if got, err := d.claim(ctx, 100); err != nil || len(got) != want {
			t.Fatalf("half open, claim %d took %d deliveries (%v), want %d", i+1, len(got), err, want)
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET failures = 0, blocked_until = NULL`); err != nil {
		t.Fatal(err)
	}
	if got, err := d.claim(ctx, 100); err != nil || len(got) != 3 {
		t.Fatalf("closed, with the probe in flight, a claim took %d deliveries (%v), want 3 (PerSubscription 4)", len(got), err)
	}
}

// TestBreaker: an endpoint that fails everything gets its first failures, and then
// is left alone (the breaker opens) instead of receiving one attempt per pending
// change: 40 conversations' changes, at most 2 in flight, cost it a handful of
// requests in the first second, not 40.
func TestBreaker(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	rc.Answer(func(*http.Request, string, int) (int, http.Header) { return http.StatusServiceUnavailable, nil })
	subscribe(t, pool, rc)
	var convs []int64
	for c := range 40 {
		convs = append(convs, int64(c+1))
	}
	addChanges(t, pool, convs...)
	started := time.Now()
	start(t, pool, Config{AllowPrivate: true, PerSubscription: 2})
	pgtest.Eventually(t, "the breaker to open", time.Minute, func() (bool, error) {
		var open bool
		err := pool.QueryRow(context.Background(), `SELECT blocked_until > now() FROM subscriptions`).Scan(&open)
		return open, err
	})
	time.Sleep(time.Second - time.Since(started)) // the first second, at least
	n := 0
	for _, r := range rc.Got() {
		if r.At.Sub(started) < time.Second {
			n++
		}
	}
	if n > breakerAfter+2 {
		t.Errorf("the failing endpoint got %d requests in the first second, want at most %d (the breaker's threshold and what was in flight)", n, breakerAfter+2)
	}
	// A success closes it.
	rc.Answer(nil)
	waitDelivered(t, rc, 40, 2*time.Minute)
}

// TestGiveUpAndReplay: an endpoint down for longer than the give-up time gets its
// deliveries declared dead (listed as such, their conversations' later changes
// included, and those its open breaker kept from being tried at all); once it is
// back, a replay from before them delivers every change again, in order.
func TestGiveUpAndReplay(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	rc.Answer(func(*http.Request, string, int) (int, http.Header) { return http.StatusBadGateway, nil })
	sub := subscribe(t, pool, rc)
	convs := []int64{1, 2, 1, 3, 1}
	for c := range 12 {
		convs = append(convs, int64(c+4))
	}
	addChanges(t, pool, convs...)
	start(t, pool, Config{AllowPrivate: true, GiveUp: 1500 * time.Millisecond})
	pgtest.Eventually(t, "every delivery dead", 20*time.Second, func() (bool, error) {
		dead, err := Deliveries(ctx, pool, sub.ID, "dead", 0, 100)
		return len(dead) == len(convs), err
	})
	if len(rc.Delivered()) != 0 {
		t.Fatalf("delivered %v through an endpoint that answers 502", rc.Delivered())
	}
	rc.Answer(nil)
	if _, err := Replay(ctx, pool, sub.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, rc, len(convs), time.Minute)
	checkOrder(t, rc, changeIDs(t, pool))
}

// TestReplayRefusesWhatRetentionDeleted: a replay from a change retention has
// deleted is refused (410 cursor_expired in the API), where fan-out would have gone
// on from the oldest change kept and the replay skipped the rest without a word; a
// replay from a change kept, or of everything kept, is not.
func TestReplayRefusesWhatRetentionDeleted(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1, 2, 3)
	var ids []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(xid::text || '.' || seq ORDER BY xid, seq) FROM changes`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	// Before retention ran, 0.0 is everything (no change has that id).
	if _, err := Replay(ctx, pool, sub.ID, "0.0"); err != nil {
		t.Fatalf("replay from 0.0 before retention deleted anything: %v", err)
	}
	// Retention deleted the first two; the subscription has had all three.
	if _, err := pool.Exec(ctx, `
WITH gone AS (DELETE FROM changes WHERE conversation_id IN (1, 2) RETURNING xid, seq)
INSERT INTO changes_horizon (xid, seq) SELECT xid, seq FROM gone ORDER BY xid DESC, seq DESC LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET (cursor_xid, cursor_seq) = (SELECT xid, seq FROM changes WHERE conversation_id = 3) WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}
	for _, from := range ids[:2] {
		if _, err := Replay(ctx, pool, sub.ID, from); !errors.Is(err, feed.ErrCursorExpired) {
			t.Errorf("replay from %s, a deleted change: %v, want ErrCursorExpired", from, err)
		}
	}
	if s, err := Get(ctx, pool, sub.ID); err != nil || s.Cursor != ids[2] {
		t.Fatalf("after the refused replays the subscription is at %s (%v), want %s, where it was", s.Cursor, err, ids[2])
	}
	for _, from := range []string{ids[2], ""} {
		if _, err := Replay(ctx, pool, sub.ID, from); err != nil {
			t.Errorf("replay from %q, all of it kept: %v", from, err)
		}
	}
}

// TestRotateSecret: after a rotation every delivery is signed with the new secret
// and, for the time kept, with the one it replaced, so that an endpoint still on the
// old secret accepts it; a second rotation that would drop that old secret while it
// still signs is refused and changes nothing; one that keeps nothing stops every
// old secret at once; the time kept runs out, and the sweep then deletes the old
// secret; the time kept is bounded.
func TestRotateSecret(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	sub := subscribe(t, pool, rc)
	d := start(t, pool, Config{AllowPrivate: true})
	secrets := []string{sub.Secret}
	for i, tc := range []struct {
		keep     time.Duration
		want     int  // how many of the latest secrets sign
		conflict bool // refused: the secret rotated out before still signs
	}{{time.Hour, 2, false}, {time.Hour, 2, true}, {0, 1, false}} {
		s, err := RotateSecret(ctx, pool, sub.ID, tc.keep)
		switch {
		case tc.conflict:
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "still signs until") {
				t.Errorf("rotation %d while the last one's old secret still signs: %v, want ErrConflict saying until when", i, err)
			}
			if s, err := Get(ctx, pool, sub.ID); err != nil || s.Secret != secrets[len(secrets)-1] {
				t.Errorf("the refused rotation changed the secret (%v)", err)
			}
		case err != nil:
			t.Fatal(err)
		case slices.Contains(secrets, s.Secret) || !strings.HasPrefix(s.Secret, "whsec_"):
			t.Fatalf("rotation %d gave secret %q, want a new whsec_ one", i, s.Secret)
		default:
			if until := s.PreviousSecretExpiresAt; (tc.keep > 0) != (until != nil) || until != nil && time.Until(*until) > tc.keep {
				t.Errorf("rotation %d keeping %v: previous secret expires at %v", i, tc.keep, until)
			}
			secrets = append(secrets, s.Secret)
		}
		newestFirst := slices.Clone(secrets)
		slices.Reverse(newestFirst)
		rc.SetSecret(newestFirst[0], newestFirst[1:]...)
		addChanges(t, pool, int64(i+1))
		d.Wake()
		waitDelivered(t, rc, i+1, time.Minute)
		if got := rc.Delivered()[i].VerifiedBy; !slices.Equal(got, newestFirst[:tc.want]) {
			t.Errorf("after rotation %d (keeping %v) a delivery verifies with %d of the secrets, newest first (%v), want the %d latest", i, tc.keep, len(got), got, tc.want)
		}
	}
	// The time kept runs out: the old secret stops signing.
	s, err := RotateSecret(ctx, pool, sub.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetSecret(s.Secret, secrets[len(secrets)-1])
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET previous_secret_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if s, err := Get(ctx, pool, sub.ID); err != nil || s.PreviousSecretExpiresAt != nil {
		t.Errorf("the previous secret's time run out: it expires at %v (%v), want none shown", s.PreviousSecretExpiresAt, err)
	}
	addChanges(t, pool, 9)
	d.Wake()
	waitDelivered(t, rc, 4, time.Minute)
	if got := rc.Delivered()[3].VerifiedBy; !slices.Equal(got, []string{s.Secret}) {
		t.Errorf("after the previous secret's time ran out, a delivery verifies with %d secrets, want the new one alone", len(got))
	}
	pgtest.Eventually(t, "the sweep forgets the secret whose time ran out", time.Minute, func() (bool, error) {
		var kept bool
		err := pool.QueryRow(ctx, `SELECT previous_secret IS NOT NULL OR previous_secret_until IS NOT NULL FROM subscriptions`).Scan(&kept)
		return !kept, err
	})
	if _, err := RotateSecret(ctx, pool, sub.ID, MaxPreviousSecret+time.Second); !errors.Is(err, ErrBadRequest) {
		t.Errorf("keeping the previous secret past %v: %v, want ErrBadRequest", MaxPreviousSecret, err)
	}
	if _, err := RotateSecret(ctx, pool, 999999, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("rotating a subscription that does not exist: %v, want ErrNotFound", err)
	}
}

// TestRotateAgain: a rotation that keeps the old secret is refused while the last
// rotation's old secret still signs, and allowed once that secret was ended early or
// its time has run out (before the sweep deletes it).
func TestRotateAgain(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub := subscribe(t, pool, deliverytest.New(t))
	if _, err := RotateSecret(ctx, pool, sub.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := RotateSecret(ctx, pool, sub.ID, time.Minute); !errors.Is(err, ErrConflict) {
		t.Errorf("a second rotation within the first one's hour: %v, want ErrConflict", err)
	}
	// Ended early (the endpoint has switched), the old secret is gone at once.
	if s, err := EndPreviousSecret(ctx, pool, sub.ID); err != nil || s.PreviousSecretExpiresAt != nil {
		t.Fatalf("end the previous secret: %+v, %v", s.PreviousSecretExpiresAt, err)
	}
	var left bool
	if err := pool.QueryRow(ctx, `SELECT previous_secret IS NOT NULL FROM subscriptions`).Scan(&left); err != nil || left {
		t.Errorf("the ended secret is still stored (%v)", err)
	}
	if _, err := RotateSecret(ctx, pool, sub.ID, time.Hour); err != nil {
		t.Fatalf("a rotation after the previous secret was ended: %v", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET previous_secret_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if s, err := RotateSecret(ctx, pool, sub.ID, time.Minute); err != nil || s.PreviousSecretExpiresAt == nil {
		t.Errorf("a rotation after the first one's old secret expired: %+v, %v; want made, keeping the current secret a minute", s.PreviousSecretExpiresAt, err)
	}
}

// TestUpdate: a subscription's URL and types change in place: the changes after
// its position go to the new URL, signed with the same secret, as the new types
// choose them (contact.erased still added), and a new URL closes the breaker. What
// Create refuses, Update refuses, and a request that changes nothing is refused.
func TestUpdate(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	before, after := deliverytest.New(t), deliverytest.New(t)
	sub := subscribe(t, pool, before)
	after.SetSecret(sub.Secret)
	d := start(t, pool, Config{AllowPrivate: true})
	addChanges(t, pool, 1)
	d.Wake()
	waitDelivered(t, before, 1, time.Minute)

	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET failures = 3, blocked_until = now() + interval '1 hour'`); err != nil {
		t.Fatal(err) // the old endpoint failed
	}
	url := after.URL + "/hooks"
	s, err := Update(ctx, pool, sub.ID, Change{URL: &url, Types: []string{"message.created"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.URL != url || !slices.Equal(s.Types, []string{feed.ContactErased, "message.created"}) || s.Failures != 0 || s.BlockedUntil != nil || s.Secret != sub.Secret {
		t.Errorf("after the update: %+v, want the new URL, message.created with contact.erased, the breaker closed, the secret kept", s)
	}
	addChanges(t, pool, 2) // a conversation.created: no longer wanted
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES ('message.created', 3, '{"id": 7}')`); err != nil {
		t.Fatal(err)
	}
	d.Wake()
	waitDelivered(t, after, 1, time.Minute)
	if got := after.Delivered(); len(got) != 1 || got[0].Type != "message.created" || !got[0].Verified {
		t.Errorf("the new URL got %+v, want the message.created alone, signed with the subscription's secret", got)
	}
	var types []string // what fan-out made deliveries of: all it ever will of these
	if err := pool.QueryRow(ctx, `SELECT array_agg(c.type ORDER BY c.xid, c.seq) FROM deliveries d JOIN changes c ON (c.xid, c.seq) = (d.change_xid, d.change_seq)`).Scan(&types); err != nil ||
		!slices.Equal(types, []string{"conversation.created", "message.created"}) {
		t.Errorf("deliveries of %v (%v), want the conversation.created before the update and the message.created after it", types, err)
	}
	if got := before.Got(); len(got) != 1 {
		t.Errorf("the old URL got %d requests, want the one before the update", len(got))
	}

	for _, tc := range []struct {
		url   *string
		types []string
		why   string
	}{
		{nil, nil, "nothing to change"},
		{nil, []string{"message.deleted"}, "not a change type"},
		{nil, []string{}, "at least one"},
		{&url, nil, "private"},
	} {
		if _, err := Update(ctx, pool, sub.ID, Change{URL: tc.url, Types: tc.types}, false); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("update %v %v: %v, want ErrBadRequest saying %q", tc.url, tc.types, err, tc.why)
		}
	}
	if _, err := Update(ctx, pool, 999999, Change{Types: []string{"message.created"}}, true); !errors.Is(err, ErrNotFound) {
		t.Errorf("updating a subscription that does not exist: %v, want ErrNotFound", err)
	}
}

// TestPing: a ping reaches the endpoint signed as a delivery is (with both secrets
// after a rotation), answers with what the endpoint did, reaches a paused
// subscription, and records nothing; a private address is refused unless allowed,
// and a missing subscription is ErrNotFound.
func TestPing(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	sub := subscribe(t, pool, rc)
	rotated, err := RotateSecret(ctx, pool, sub.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetSecret(rotated.Secret, sub.Secret)
	if _, err := Pause(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	d := newIdle(t, pool, Config{AllowPrivate: true})

	p, err := d.Ping(ctx, sub.ID)
	got := rc.Got()
	if err != nil || !p.Delivered || p.Status == nil || *p.Status != http.StatusNoContent || p.Error != nil || len(got) != 1 {
		t.Fatalf("ping = %+v, %v; the endpoint got %d requests; want delivered, 204, one request", p, err, len(got))
	}
	if r := got[0]; r.ID != p.WebhookID || !strings.HasPrefix(r.ID, "ping_") || r.Type != PingType || len(r.VerifiedBy) != 2 {
		t.Errorf("the endpoint got %+v, want a ping with the ping's webhook-id, verified with both secrets", r)
	}

	rc.Answer(func(*http.Request, string, int) (int, http.Header) { return http.StatusUnauthorized, nil })
	p, err = d.Ping(ctx, sub.ID)
	if err != nil || p.Delivered || p.Status == nil || *p.Status != http.StatusUnauthorized || p.Error == nil || !strings.Contains(*p.Error, "answered 401") {
		t.Errorf("ping of an endpoint that answers 401 = %+v, %v, want not delivered, saying so", p, err)
	}
	var deliveries int
	var s Subscription
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM deliveries`).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if s, err = Get(ctx, pool, sub.ID); err != nil || deliveries != 0 || s.Failures != 0 || s.BlockedUntil != nil || s.Cursor != sub.Cursor {
		t.Errorf("after two pings: %d deliveries, subscription %+v (%v), want nothing recorded", deliveries, s, err)
	}

	guarded := newIdle(t, pool, Config{})
	if p, err = guarded.Ping(ctx, sub.ID); err != nil || p.Delivered || p.Status != nil || p.Error == nil || !strings.Contains(*p.Error, "private") {
		t.Errorf("ping of a loopback endpoint without AllowPrivate = %+v, %v, want refused before any request", p, err)
	}
	if len(rc.Got()) != 2 {
		t.Errorf("the endpoint got %d requests, want the two pings allowed", len(rc.Got()))
	}
	if _, err := d.Ping(ctx, 999999); !errors.Is(err, ErrNotFound) {
		t.Errorf("ping of a subscription that does not exist: %v, want ErrNotFound", err)
	}
}

// TestProviders: a subscription to some providers is sent only their conversations'
// changes, a provider's name taking in its named senders, including the
// contact.erased of a conversation the erasure deleted, by the provider it names (one
// that names none, written before it did, reaches everyone: it holds no personal
// data); one without providers gets every change. Unknown providers are refused;
// an update to none means every provider again.
func TestProviders(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	convs := map[string]int64{}
	for _, p := range []string{"meta", "generic:acme", "generic:other", "twilio"} {
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ($1, '+15550001111', '+15552223333', now()) RETURNING id`, p).Scan(&id); err != nil {
			t.Fatal(err)
		}
		convs[p] = id
	}
	some, generic, all := deliverytest.New(t), deliverytest.New(t), deliverytest.New(t)
	for rc, providers := range map[*deliverytest.Receiver][]string{some: {"meta", "generic:acme", "meta"}, generic: {"generic"}, all: nil} {
		s, err := Create(ctx, pool, rc.URL, allTypes, true, providers...)
		if err != nil {
			t.Fatal(err)
		}
		rc.SetSecret(s.Secret)
		if want := slices.Compact(slices.Sorted(slices.Values(providers))); !slices.Equal(s.Providers, want) {
			t.Errorf("created with providers %v: %v, want %v", providers, s.Providers, want)
		}
	}
	addChanges(t, pool, convs["meta"], convs["generic:acme"], convs["generic:other"], convs["twilio"])
	// Conversations an erasure deleted: their contact.erased says their provider
	// (997, 998), or, written before it did, does not (999).
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES
('contact.erased', 997, '{"conversation_id": 997, "provider": "generic:acme"}'),
('contact.erased', 998, '{"conversation_id": 998, "provider": "twilio"}'),
('contact.erased', 999, '{"conversation_id": 999}')`); err != nil {
		t.Fatal(err)
	}
	start(t, pool, Config{AllowPrivate: true, Timeout: time.Second}) // contact.erased waits a lease, Timeout + 5s
	waitDelivered(t, all, 7, time.Minute)
	waitDelivered(t, some, 4, time.Minute)
	waitDelivered(t, generic, 4, time.Minute)
	for name, tc := range map[string]struct {
		rc   *deliverytest.Receiver
		want []int64
	}{
		"meta and generic:acme": {some, []int64{convs["meta"], convs["generic:acme"], 997, 999}},
		"generic":               {generic, []int64{convs["generic:acme"], convs["generic:other"], 997, 999}},
		"every provider":        {all, []int64{convs["meta"], convs["generic:acme"], convs["generic:other"], convs["twilio"], 997, 998, 999}},
	} {
		var got []int64
		for _, r := range tc.rc.Delivered() {
			got = append(got, r.ConversationID)
		}
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("the subscription to %s got conversations %v, want %v", name, got, tc.want)
		}
	}

	if _, err := Create(ctx, pool, all.URL, allTypes, true, "twillio"); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), `"twillio" is not a provider`) {
		t.Errorf("a misspelt provider: %v, want ErrBadRequest naming it", err)
	}
	many := make([]string, maxProviders+1)
	for i := range many {
		many[i] = fmt.Sprintf("generic:s%d", i)
	}
	if _, err := Create(ctx, pool, all.URL, allTypes, true, many...); !errors.Is(err, ErrBadRequest) {
		t.Errorf("%d providers: %v, want ErrBadRequest", len(many), err)
	}
	subs, err := List(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.Providers != nil {
			every := []string{}
			if u, err := Update(ctx, pool, s.ID, Change{Providers: &every}, true); err != nil || u.Providers != nil {
				t.Errorf("update to no providers: %v (%v), want every provider (null)", u.Providers, err)
			}
		}
	}
}

// TestPauseResume: nothing is sent while a subscription is paused, neither what was
// fanned out before the pause nor what was committed during it; all of it is
// delivered after it resumes. A pause does not count against the give-up time: a
// delivery older than it is not given up while paused, and its clock starts again
// at the resume.
func TestPauseResume(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	sub := subscribe(t, pool, rc)
	addChanges(t, pool, 1)
	idle := newIdle(t, pool, Config{AllowPrivate: true})
	fanOutUntil(t, pool, idle, 1)
	if _, err := Pause(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET since = now() - interval '1 hour'`); err != nil {
		t.Fatal(err) // paused for an hour
	}
	d := start(t, pool, Config{AllowPrivate: true, GiveUp: 10 * time.Minute})
	addChanges(t, pool, 1, 2)
	d.Wake()
	time.Sleep(500 * time.Millisecond) // several sweeps
	if got := rc.Got(); len(got) != 0 {
		t.Fatalf("a paused subscription was sent %v", got)
	}
	var states []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(state) FROM deliveries`).Scan(&states); err != nil || !slices.Equal(states, []string{"pending"}) {
		t.Fatalf("while paused past the give-up time: deliveries %v (%v), want the one pending", states, err)
	}
	if _, err := Resume(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	var oldest time.Duration
	if err := pool.QueryRow(ctx, `SELECT max(now() - since) FROM deliveries`).Scan(&oldest); err != nil || oldest > time.Minute {
		t.Fatalf("after the resume the oldest delivery's give-up clock says %v (%v), want it started again", oldest, err)
	}
	d.Wake()
	waitDelivered(t, rc, 3, time.Minute)
	checkOrder(t, rc, changeIDs(t, pool))
}

// TestPauseResumeTouchOneSubscription: pausing and resuming a subscription leaves the
// others as they were: still active, and their deliveries' give-up clocks running.
func TestPauseResumeTouchOneSubscription(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	sub, other := subscribe(t, pool, deliverytest.New(t)), subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1)
	fanOutUntil(t, pool, newIdle(t, pool, Config{AllowPrivate: true}), 2)
	if _, err := Pause(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	if o, err := Get(ctx, pool, other.ID); err != nil || o.State != "active" {
		t.Fatalf("the other subscription after a pause: %q (%v), want active", o.State, err)
	}
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET since = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	if _, err := Resume(ctx, pool, sub.ID); err != nil {
		t.Fatal(err)
	}
	age := func(id int64) time.Duration {
		t.Helper()
		var d time.Duration
		if err := pool.QueryRow(ctx, `SELECT now() - since FROM deliveries WHERE subscription_id = $1`, id).Scan(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if a, b := age(sub.ID), age(other.ID); a > time.Minute || b < 59*time.Minute {
		t.Errorf("after the resume the give-up clocks say %v (resumed) and %v (the other); want the first started again, the other an hour on", a, b)
	}
}

// TestErasureWaitsOutALease: a contact.erased change's delivery is first tried a
// lease after the change was written, so that an attempt in flight of one of the
// conversation's earlier changes (whose delivery the erasure deleted) has ended by
// then; one written longer ago than that (fanned out again by a replay) is tried at
// once, as other changes are.
func TestErasureWaitsOutALease(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	subscribe(t, pool, deliverytest.New(t))
	addChanges(t, pool, 1) // conversation.created of conversation 1
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data, occurred_at)
VALUES ('contact.erased', 2, '{"conversation_id": 2}', clock_timestamp()),
       ('contact.erased', 3, '{"conversation_id": 3}', clock_timestamp() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	d := newIdle(t, pool, Config{AllowPrivate: true})
	fanOutUntil(t, pool, d, 3)
	rows, _ := pool.Query(ctx, `SELECT conversation_id, extract(epoch FROM run_at - now())::float8 FROM deliveries`)
	waits := map[int64]float64{}
	var conv int64
	var wait float64
	if _, err := pgx.ForEachRow(rows, []any{&conv, &wait}, func() error { waits[conv] = wait; return nil }); err != nil {
		t.Fatal(err)
	}
	lease := d.cfg.lease().Seconds()
	if w, ok := waits[2]; !ok || w < lease-5 || w > lease {
		t.Errorf("a fresh contact.erased is first tried in %.1f s (%v), want a lease, %.0f s", w, ok, lease)
	}
	if w, ok := waits[3]; !ok || w > 0 {
		t.Errorf("a contact.erased written an hour ago is first tried in %.1f s (%v), want at once", w, ok)
	}
	if w, ok := waits[1]; !ok || w > 0 {
		t.Errorf("conversation.created is first tried in %.1f s (%v), want at once", w, ok)
	}
}

// TestTypesFilter: a subscription gets the types it asked for (with contact.erased), no
// others.
func TestTypesFilter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	subscribe(t, pool, rc, "message.created")
	addChanges(t, pool, 1) // conversation.created
	if _, err := pool.Exec(context.Background(), `INSERT INTO changes (type, conversation_id, data) VALUES ('message.created', 1, '{"id": 7}')`); err != nil {
		t.Fatal(err)
	}
	start(t, pool, Config{AllowPrivate: true})
	waitDelivered(t, rc, 1, time.Minute)
	time.Sleep(300 * time.Millisecond)
	for _, r := range rc.Got() {
		if r.Type != "message.created" {
			t.Errorf("delivered a %s to a subscription of message.created only", r.Type)
		}
	}
}

// TestDeliversTheMessageAsChanged: a message's change refers to the message (migration
// 018); its delivery carries the message as it was when the change happened, with
// the change's status, not the message's status now.
func TestDeliversTheMessageAsChanged(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	subscribe(t, pool, rc, "message.created")
	for _, sql := range []string{
		`INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'e1', '{}')`,
		`INSERT INTO conversations (provider, channel_address, contact_address, last_message_at) VALUES ('generic', '+1', '+2', now())`,
		`INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
		 VALUES ('generic', 'm1', 1, 'outbound', '+1', '+2', 'hello', 'delivered', now(), 1)`,
		`INSERT INTO changes (type, conversation_id, message_id, status) VALUES ('message.created', 1, 1, 'sent')`,
	} {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	start(t, pool, Config{AllowPrivate: true})
	waitDelivered(t, rc, 1, time.Minute)
	if got := rc.Got()[0].Data; got["text"] != "hello" || got["status"] != "sent" || got["provider_message_id"] != "m1" {
		t.Errorf("delivered object %v, want message m1 with text hello and the change's status, sent", got)
	}
}

// TestCreateChecksTypesFirst: a misspelt type is named even when the URL's host
// would not resolve; the check needs no lookup (.invalid never resolves, RFC 6761).
func TestCreateChecksTypesFirst(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	_, err := Create(context.Background(), pool, "https://crm.invalid/hooks", []string{"message.creatd"}, false)
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), `"message.creatd" is not a change type`) {
		t.Errorf("Create with a misspelt type = %v, want the type named", err)
	}
}

// TestPrivateAddressesRefused: without AllowPrivate, a subscription of a loopback
// URL is refused when made, and a delivery whose address turned private (a URL
// stored before, or a DNS name that now resolves to one) is refused when sent, dead
// with the reason; a redirect is not followed.
func TestPrivateAddressesRefused(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	if _, err := Create(ctx, pool, rc.URL, allTypes, false); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "INBOX_DELIVERY_ALLOW_PRIVATE") {
		t.Fatalf("Create(%s) = %v, want a refusal naming INBOX_DELIVERY_ALLOW_PRIVATE", rc.URL, err)
	}
	sub := subscribe(t, pool, rc) // allowed here, refused by the deliverer below
	addChanges(t, pool, 1)
	start(t, pool, Config{AllowPrivate: false})
	pgtest.Eventually(t, "the delivery dead", time.Minute, func() (bool, error) {
		dead, err := Deliveries(ctx, pool, sub.ID, "dead", 0, 10)
		if len(dead) == 1 && (dead[0].LastError == nil || !strings.Contains(*dead[0].LastError, "address refused")) {
			return false, fmt.Errorf("dead with %v, want address refused", dead[0].LastError)
		}
		return len(dead) == 1, err
	})
	if got := rc.Got(); len(got) != 0 {
		t.Errorf("the private endpoint was called: %v", got)
	}
}

// TestRedirectNotFollowed: a 3xx is an answer, dead at once, never followed.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	target := deliverytest.New(t)
	rc := deliverytest.New(t)
	rc.Answer(func(*http.Request, string, int) (int, http.Header) {
		return http.StatusTemporaryRedirect, http.Header{"Location": {target.URL}}
	})
	sub := subscribe(t, pool, rc)
	addChanges(t, pool, 1)
	start(t, pool, Config{AllowPrivate: true})
	pgtest.Eventually(t, "the delivery dead", time.Minute, func() (bool, error) {
		dead, err := Deliveries(ctx, pool, sub.ID, "dead", 0, 10)
		return len(dead) == 1, err
	})
	if got := target.Got(); len(got) != 0 {
		t.Errorf("the redirect was followed: %v", got)
	}
}

// TestSlowSubscriberDoesNotDelayAnother: one endpoint hangs until the attempt's
// timeout, another answers at once; the second gets all its changes while the first
// still holds its attempts, because one subscription never takes more than
// PerSubscription of a process's slots.
func TestSlowSubscriberDoesNotDelayAnother(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	slow, fast := deliverytest.New(t), deliverytest.New(t)
	slow.Answer(func(r *http.Request, _ string, _ int) (int, http.Header) {
		<-r.Context().Done()
		return 0, nil
	})
	subscribe(t, pool, slow)
	subscribe(t, pool, fast)
	var convs []int64
	for c := range 40 {
		convs = append(convs, int64(c+1))
	}
	addChanges(t, pool, convs...)
	const timeout = 6 * time.Second
	started := time.Now()
	start(t, pool, Config{AllowPrivate: true, Timeout: timeout, InFlight: 20, PerSubscription: 16})
	waitDelivered(t, fast, 40, time.Minute)
	if took := time.Since(started); took >= timeout {
		t.Errorf("the fast endpoint got its changes after %v, not before the slow one's attempts timed out (%v)", took, timeout)
	}
}

// TestBreakerStepsPerBatch: however many attempts fail in one batch (16 that hung
// together and timed out together), the breaker opens for its first second, not for
// a period doubled once per attempt; from there each failed probe doubles it, and a
// success closes it.
func TestBreakerStepsPerBatch(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	rc := deliverytest.New(t)
	sub := subscribe(t, pool, rc).ID
	ctx := context.Background()
	step := func(ok bool, failed int) (failures int, open time.Duration) {
		t.Helper()
		if _, err := pool.Exec(ctx, breakerUpdate, []int64{sub}, []bool{ok}, []int32{int32(failed)}, breakerAfter, breakerCap.Milliseconds()); err != nil {
			t.Fatal(err)
		}
		var secs *float64
		if err := pool.QueryRow(ctx, `SELECT failures, extract(epoch FROM blocked_until - now())::float8 FROM subscriptions WHERE id = $1`, sub).Scan(&failures, &secs); err != nil {
			t.Fatal(err)
		}
		if secs != nil {
			open = time.Duration(*secs * float64(time.Second))
		}
		return failures, open
	}
	if _, open := step(false, 16); open <= 0 || open > time.Second {
		t.Errorf("16 failures in one batch opened the breaker for %s, want its first second", open)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET blocked_until = now() WHERE id = $1`, sub); err != nil { // the second passed
		t.Fatal(err)
	}
	if _, open := step(false, 1); open <= time.Second || open > 2*time.Second {
		t.Errorf("a failed probe: open for %s, want two seconds", open)
	}
	if failures, open := step(true, 0); failures != 0 || open != 0 {
		t.Errorf("a success: %d failures, open for %s; want it closed", failures, open)
	}
}

// TestFinishesTakeOrderLocksInOneOrder: two finishes of the same conversations'
// deliveries, listed in opposite orders (two processes' finishers), both end: the
// order locks are taken sorted. The higher lock is held first, so that both are under
// way, each waiting, when it is let go.
func TestFinishesTakeOrderLocksInOneOrder(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	const sub = 1
	hi, lo := int64(1), int64(2)
	if orderKey(sub, hi) < orderKey(sub, lo) {
		hi, lo = lo, hi
	}
	d := newIdle(t, pool, Config{AllowPrivate: true})
	of := func(convs ...int64) []attempt {
		var out []attempt
		for _, c := range convs {
			out = append(out, attempt{claimed{ID: c, Subscription: sub, ConversationID: c, Attempts: 1}, result{}})
		}
		return out
	}
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, $2::int)`, orderLockSpace, orderKey(sub, hi))
		return err
	}, false, func() error { return d.finish(ctx, of(hi, lo)) }, func() error { return d.finish(ctx, of(lo, hi)) })
}

// TestSubscriptionRecords: what Create, Get, Resume and Delete promise beyond
// delivering. A new subscription starts at the feed's head (changes already made are
// not sent unless replayed); its types are kept once each, sorted, with contact.erased
// added to those that carry a contact's data; Get counts every
// state, those with none as 0; Resume closes the breaker; a misspelt type is echoed
// bounded; a Delete deletes that subscription only, and deleting a missing one is
// ErrNotFound.
func TestSubscriptionRecords(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	addChanges(t, pool, 1, 2)
	waitFinal(t, pool)
	s, err := Create(ctx, pool, rc.URL, []string{"message.created", "conversation.created", "message.created"}, true)
	if err != nil {
		t.Fatal(err)
	}
	ids := changeIDs(t, pool)
	if s.Cursor != ids[2][0] {
		t.Errorf("a new subscription's cursor is %s, want the feed's head %s (the last change before it)", s.Cursor, ids[2][0])
	}
	if !slices.Equal(s.Types, []string{"contact.erased", "conversation.created", "message.created"}) {
		t.Errorf("types %v, want each once, sorted, with contact.erased added to types that carry a contact's data", s.Types)
	}
	only, err := Create(ctx, pool, rc.URL, []string{"contact.erased"}, true)
	if err != nil || !slices.Equal(only.Types, []string{"contact.erased"}) {
		t.Errorf("a subscription to contact.erased alone has types %v (%v), want just that", only.Types, err)
	}
	got, err := Get(ctx, pool, s.ID)
	if err != nil || len(got.Deliveries) != len(States) {
		t.Errorf("Get = %v (%v), want a count of each of %v", got.Deliveries, err, States)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET failures = 9, blocked_until = now() + interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	if r, err := Resume(ctx, pool, s.ID); err != nil || r.Failures != 0 || r.BlockedUntil != nil {
		t.Errorf("Resume = failures %d, blocked until %v (%v); want the breaker closed", r.Failures, r.BlockedUntil, err)
	}
	_, err = Create(ctx, pool, rc.URL, []string{strings.Repeat("x", 10_000)}, true)
	if !errors.Is(err, ErrBadRequest) || len(err.Error()) > 500 {
		t.Errorf("Create(a 10,000-byte type) = %.600v, want ErrBadRequest echoing it bounded", err)
	}
	if err := Delete(ctx, pool, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, pool, s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(already deleted) = %v, want ErrNotFound", err)
	}
	if _, err := Get(ctx, pool, only.ID); err != nil {
		t.Errorf("the other subscription after a Delete: %v, want it kept", err)
	}
}

// TestSubscriptionRules: what a subscription's calls refuse, and what a replay moves.
func TestSubscriptionRules(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	if _, err := Create(ctx, pool, rc.URL, nil, true); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "at least one") {
		t.Errorf("Create with no types = %v, want ErrBadRequest asking for one", err)
	}
	addChanges(t, pool, 1, 2)
	waitFinal(t, pool)
	s := subscribe(t, pool, rc)
	if _, err := Deliveries(ctx, pool, s.ID, "delivred", 0, 10); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Deliveries in a misspelt state = %v, want ErrBadRequest", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET failures = 9, blocked_until = now() + interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	ids := changeIDs(t, pool)
	first, second := ids[1][0], ids[2][0]
	r, err := Replay(ctx, pool, s.ID, first)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := feed.ParseCursor(first)
	if want := (feed.Cursor{XID: c.XID, Seq: c.Seq - 1}).String(); r.Cursor != want {
		t.Errorf("cursor after a replay from %s: %s, want %s, just before it", first, r.Cursor, want)
	}
	if r.Failures != 0 || r.BlockedUntil != nil {
		t.Errorf("after a replay: failures %d, blocked until %v; want the breaker closed", r.Failures, r.BlockedUntil)
	}
	if _, err := Replay(ctx, pool, s.ID, second); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "after the subscription's position") {
		t.Errorf("a replay from a change after the cursor = %v, want ErrBadRequest saying so", err)
	}
	if got, _ := Get(ctx, pool, s.ID); got.Cursor != r.Cursor {
		t.Errorf("a refused replay moved the cursor to %s", got.Cursor)
	}
	if _, err := Replay(ctx, pool, s.ID+1000, first); !errors.Is(err, ErrNotFound) {
		t.Errorf("a replay of a missing subscription = %v, want ErrNotFound", err)
	}
}
