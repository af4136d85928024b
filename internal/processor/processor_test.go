package processor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
)

// TestExactlyOnce: 5,000 events and four processors, each with its own pool as
// separate processes would have: every event processed once, one message each.
func TestExactlyOnce(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	const n = 5000
	var mu sync.Mutex
	handled := map[string]int{}
	counting := func(payload []byte, at time.Time) (provider.Normalized, error) {
		norm, err := generic.Normalize(payload, at)
		if err == nil {
			mu.Lock()
			handled[norm.Message.ID]++
			mu.Unlock()
		}
		return norm, err
	}
	for range 4 {
		start(t, url, Config{Workers: 4, BatchSize: 32, Normalizers: map[string]provider.Normalizer{"generic": counting}})
	}
	base := time.Now()
	payloads := make([]string, 0, 500)
	for i := range n {
		payloads = append(payloads, received(fmt.Sprintf("m-%d", i), "hi", base.Add(time.Duration(i)*time.Millisecond)))
		if len(payloads) == cap(payloads) {
			insertEvents(t, pool, payloads...)
			payloads = payloads[:0]
		}
	}
	counts := waitSettled(t, pool, 60*time.Second)
	if counts["processed"] != n {
		t.Fatalf("queue = %v, want %d processed", counts, n)
	}
	var messages, maxAttempts int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&messages); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(context.Background(), "SELECT max(attempts) FROM inbound_events").Scan(&maxAttempts); err != nil {
		t.Fatal(err)
	}
	if messages != n || maxAttempts != 1 {
		t.Errorf("messages = %d, max attempts = %d; want %d and 1", messages, maxAttempts, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, c := range handled {
		if c != 1 {
			t.Errorf("message %s handled %d times, want once", id, c)
		}
	}
	if len(handled) != n {
		t.Errorf("%d distinct messages handled, want %d", len(handled), n)
	}
}

// TestDeadlockedBatchIsSentAgain: a batch the server rolls back to break a deadlock
// is sent again at once, within its claim: its event is processed on its first
// attempt, not retried with backoff. The deadlock is a real one. Another transaction
// holds the conversation's row, which the apply waits for while it holds its
// message's lock, and then asks for that message's lock. Only the apply looks for
// deadlocks soon (the other waits a minute before it does), so the apply is the
// transaction that is rolled back.
func TestDeadlockedBatchIsSentAgain(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	ctx := context.Background()
	start(t, url, Config{Workers: 1})
	base := time.Now()
	insertEvents(t, pool, received("m-0", "first", base))
	waitSettled(t, pool, time.Minute)

	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '60s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT id FROM conversations FOR NO KEY UPDATE`); err != nil {
		t.Fatal(err)
	}
	insertEvents(t, pool, received("m-1", "second", base.Add(time.Second)))
	pgtest.WaitLocked(t, pool, 1) // the apply waits for the conversation
	if _, err := other.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, messageLockID("generic", "m-1")); err != nil {
		t.Fatalf("the other transaction's lock: %v (it, not the apply, was rolled back)", err)
	}
	other.Rollback(ctx)

	waitSettled(t, pool, time.Minute)
	var state string
	var attempts int
	if err := pool.QueryRow(ctx, `SELECT state, attempts FROM inbound_events WHERE payload->'data'->>'message_id' = 'm-1'`).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != "processed" || attempts != 1 {
		t.Errorf("the deadlocked event: %s after %d attempts, want processed on its first", state, attempts)
	}
}

// TestNotifyWakesWorkers: with the sweep an hour away and every worker idle, an event
// another process commits (an INSERT here: nothing calls Committed) is processed,
// which only its NOTIFY can have caused. The first event and the idle check make sure
// the start-up pass is over before the second arrives.
func TestNotifyWakesWorkers(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	p := start(t, url, Config{SweepInterval: time.Hour})
	pgtest.Eventually(t, "listener connected", 10*time.Second, func() (bool, error) { return p.ListenerConnected(), nil })
	insertEvents(t, pool, received("m-0", "first", time.Now()))
	waitSettled(t, pool, 10*time.Second)
	pgtest.Eventually(t, "every worker idle", 10*time.Second, func() (bool, error) { return p.active.Load() == 0, nil })
	insertEvents(t, pool, received("m-1", "woken by NOTIFY", time.Now()))
	if counts := waitSettled(t, pool, 10*time.Second); counts["processed"] != 2 {
		t.Errorf("queue %v, want both events processed", counts)
	}
}

// TestListenerLoss: the listening backend is terminated; events are still processed
// (sweep) and the listener comes back on a new connection.
func TestListenerLoss(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	p := start(t, url, Config{SweepInterval: 200 * time.Millisecond})
	pgtest.Eventually(t, "listener connected", 10*time.Second, func() (bool, error) { return p.ListenerConnected(), nil })
	listenerPID := func() (int, error) {
		var pid int
		err := pool.QueryRow(context.Background(), `
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'`).Scan(&pid)
		return pid, err
	}
	before, err := listenerPID()
	if err != nil {
		t.Fatalf("find the listening backend: %v", err)
	}
	if _, err := pool.Exec(context.Background(), "SELECT pg_terminate_backend($1)", before); err != nil {
		t.Fatal(err)
	}
	insertEvents(t, pool, received("m-1", "during the gap", time.Now()))
	waitSettled(t, pool, 10*time.Second)
	pgtest.Eventually(t, "listener back on a new backend", 15*time.Second, func() (bool, error) {
		after, err := listenerPID()
		return err == nil && after != before && p.ListenerConnected(), err
	})
	insertEvents(t, pool, received("m-2", "after", time.Now()))
	waitSettled(t, pool, 10*time.Second)
}

// TestRetryThenSuccess: a transient failure twice, then success; attempts and
// last_error are recorded.
func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	var mu sync.Mutex
	calls := 0
	flaky := func(payload []byte, at time.Time) (provider.Normalized, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= 2 {
			return provider.Normalized{}, fmt.Errorf("upstream hiccup %d", calls)
		}
		return generic.Normalize(payload, at)
	}
	start(t, url, Config{Normalizers: map[string]provider.Normalizer{"generic": flaky}})
	insertEvents(t, pool, received("m-1", "hi", time.Now()))
	pgtest.Eventually(t, "processed after retries", 20*time.Second, func() (bool, error) {
		var state string
		err := pool.QueryRow(context.Background(), "SELECT state FROM inbound_events").Scan(&state)
		return state == "processed", err
	})
	var attempts int
	var lastErr string
	if err := pool.QueryRow(context.Background(), "SELECT attempts, last_error FROM inbound_events").Scan(&attempts, &lastErr); err != nil {
		t.Fatal(err)
	}
	if attempts != 3 || !strings.Contains(lastErr, "upstream hiccup 2") {
		t.Errorf("attempts = %d, last_error = %q; want 3 and the second failure", attempts, lastErr)
	}
	// Each failed attempt's error is kept, in order (the console lists them).
	var errs []struct {
		Attempt int
		Error   string
	}
	if err := pool.QueryRow(context.Background(), "SELECT errors FROM inbound_events").Scan(&errs); err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 || errs[0].Attempt != 1 || !strings.Contains(errs[0].Error, "hiccup 1") || errs[1].Attempt != 2 || !strings.Contains(errs[1].Error, "hiccup 2") {
		t.Errorf("errors = %+v, want attempts 1 and 2 with their hiccups", errs)
	}
}

// TestErrorHistoryIsBounded: inbox_append_error keeps the last n errors.
func TestErrorHistoryIsBounded(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	var got string
	err := pool.QueryRow(context.Background(), `
SELECT inbox_append_error(inbox_append_error(inbox_append_error(NULL, '1', 2), '2', 2), '3', 2)::text`).Scan(&got)
	if err != nil || got != "[2, 3]" {
		t.Errorf("got %s (%v), want [2, 3]", got, err)
	}
}

// TestPoisonGoesDeadWithoutBlocking: a payload that can never parse is dead at once,
// a panicking normalizer costs attempts until dead, and neither holds up the rest.
func TestPoisonGoesDeadWithoutBlocking(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	panicky := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		if err == nil && n.Message != nil && n.Message.Text == "panic" {
			panic("normalizer bug")
		}
		return n, err
	}
	start(t, url, Config{MaxAttempts: 2, Normalizers: map[string]provider.Normalizer{"generic": panicky}})
	now := time.Now()
	insertEvents(t, pool,
		`{"type":"message.received","data":{}}`, // can never parse: no message id
		received("m-panic", "panic", now),
		received("m-1", "a", now), received("m-2", "b", now), received("m-3", "c", now))
	pgtest.Eventually(t, "three messages while poison is around", 10*time.Second, func() (bool, error) {
		var n int
		err := pool.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&n)
		return n == 3, err
	})
	counts := waitSettled(t, pool, 20*time.Second)
	if counts["dead"] != 2 || counts["processed"] != 3 {
		t.Fatalf("queue = %v, want 2 dead and 3 processed", counts)
	}
	rows, err := pool.Query(context.Background(), "SELECT attempts, last_error FROM inbound_events WHERE state = 'dead' ORDER BY attempts")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var a int
		var e string
		rows.Scan(&a, &e)
		got = append(got, fmt.Sprintf("%d:%s", a, e))
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "1:permanent") || !strings.HasPrefix(got[1], "2:") || !strings.Contains(got[1], "panicked") {
		t.Errorf("dead events = %q; want the unparsable one dead after 1 attempt, the panicking one after 2", got)
	}
}

// TestStatusesOutOfOrder: read, then delivered, then the message: it ends read.
func TestStatusesOutOfOrder(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	start(t, url, Config{})
	t0 := time.Now()
	insertEvents(t, pool, status("m-1", "read", t0.Add(2*time.Second)))
	waitSettled(t, pool, 10*time.Second)
	insertEvents(t, pool, status("m-1", "delivered", t0.Add(time.Second)))
	waitSettled(t, pool, 10*time.Second)
	insertEvents(t, pool, sent("m-1", "+15552223333", t0))
	waitSettled(t, pool, 10*time.Second)
	insertEvents(t, pool, status("m-1", "sent", t0)) // late and lower: ignored
	waitSettled(t, pool, 10*time.Second)
	var st string
	var parked int
	if err := pool.QueryRow(context.Background(), "SELECT status FROM messages WHERE provider_message_id = 'm-1'").Scan(&st); err != nil {
		t.Fatal(err)
	}
	pool.QueryRow(context.Background(), "SELECT count(*) FROM pending_statuses").Scan(&parked)
	if st != "read" || parked != 0 {
		t.Errorf("status = %q with %d parked statuses, want read and 0", st, parked)
	}
}

// TestLateMessageLeavesItsConversationAlone: a message older than its conversation's
// latest one (a provider's late redelivery, a replay) neither moves last_message_at
// back nor rewrites the conversation's row: each rewrite is a new row version with
// an entry in every index of conversations, and a lock that the conversation's
// other writers would wait on. One that brings a new contact name records the name
// and still keeps the latest time.
func TestLateMessageLeavesItsConversationAlone(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	start(t, url, Config{})
	ctx := context.Background()
	const t0 = 1749416383
	meta := func(id, name string, at int64) {
		t.Helper()
		// As ingest stores a Meta message: the item with its envelope's metadata and contacts.
		payload := fmt.Sprintf(`{"metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
"contacts":[{"profile":{"name":%q},"wa_id":"16505551234"}],
"message":{"from":"16505551234","id":%q,"timestamp":"%d","type":"text","text":{"body":"hi"}}}`, name, id, at)
		if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('meta', $1, $2)`, id, payload); err != nil {
			t.Fatal(err)
		}
		waitSettled(t, pool, 10*time.Second)
	}
	type conv struct {
		version, name string
		last          int64
	}
	read := func() (c conv) {
		t.Helper()
		if err := pool.QueryRow(ctx, "SELECT xmin::text, contact_name, extract(epoch FROM last_message_at)::bigint FROM conversations").Scan(&c.version, &c.name, &c.last); err != nil {
			t.Fatal(err)
		}
		return c
	}
	meta("wamid.new", "Sheena Nelson", t0)
	first := read()
	meta("wamid.old", "Sheena Nelson", t0-60)
	if got := read(); got != first {
		t.Errorf("after a late message: %+v, want the row as it was, %+v", got, first)
	}
	meta("wamid.older", "Sheena N.", t0-120)
	if got := read(); got.name != "Sheena N." || got.last != t0 {
		t.Errorf("after a late message with a new name: %+v, want the name Sheena N. and last_message_at still %d", got, t0)
	}
	var messages int
	if pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&messages); messages != 3 {
		t.Errorf("%d messages, want 3", messages)
	}
}

// TestStatusRanks: each status applies only above the current rank.
func TestStatusRanks(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	start(t, url, Config{})
	t0 := time.Now()
	insertEvents(t, pool, sent("m-1", "+15552223333", t0))
	waitSettled(t, pool, 10*time.Second)
	steps := []struct{ status, want string }{
		{"queued", "sent"}, {"delivered", "delivered"}, {"failed", "delivered"}, {"sending", "delivered"}, {"read", "read"}, {"delivered", "read"},
	}
	for i, s := range steps {
		insertEvents(t, pool, status("m-1", s.status, t0.Add(time.Duration(i+1)*time.Second)))
		waitSettled(t, pool, 10*time.Second)
		var got string
		pool.QueryRow(context.Background(), "SELECT status FROM messages").Scan(&got)
		if got != s.want {
			t.Errorf("after %s: status %q, want %q", s.status, got, s.want)
		}
	}
}

// TestOneConversationUnderConcurrency: 200 events for one contact at once, many
// workers: one conversation, 200 messages, no deadlock, latest time kept.
func TestOneConversationUnderConcurrency(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	for range 3 {
		start(t, url, Config{Workers: 8, BatchSize: 8})
	}
	t0 := time.Now().Truncate(time.Millisecond)
	payloads := make([]string, 200)
	for i := range payloads {
		payloads[i] = received(fmt.Sprintf("m-%d", i), "hi", t0.Add(time.Duration(i)*time.Millisecond))
		if i%2 == 1 { // statuses for messages in flight at the same time
			payloads[i] = sent(fmt.Sprintf("m-%d", i), "+15552223333", t0.Add(time.Duration(i)*time.Millisecond))
		}
	}
	insertEvents(t, pool, payloads...)
	counts := waitSettled(t, pool, 30*time.Second)
	var convs, msgs, retried int
	var latest time.Time
	pool.QueryRow(context.Background(), "SELECT count(*), max(last_message_at) FROM conversations").Scan(&convs, &latest)
	pool.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&msgs)
	pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE attempts > 1").Scan(&retried)
	if convs != 1 || msgs != 200 || counts["processed"] != 200 || retried != 0 {
		t.Errorf("conversations %d, messages %d, queue %v, retried %d; want 1, 200, 200 processed, 0", convs, msgs, counts, retried)
	}
	if want := t0.Add(199 * time.Millisecond); !latest.Equal(want) {
		t.Errorf("last_message_at = %v, want %v", latest, want)
	}
}

// TestReprocessingIsIdempotent: applying the same event twice leaves the same rows.
func TestReprocessingIsIdempotent(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	start(t, url, Config{})
	t0 := time.Now()
	insertEvents(t, pool, received("m-1", "hi", t0), status("m-2", "read", t0))
	waitSettled(t, pool, 10*time.Second)
	snapshot := func() string {
		var s string
		pool.QueryRow(context.Background(), `SELECT concat_ws('|',
  (SELECT json_agg(m ORDER BY id)::text FROM (SELECT id, conversation_id, status, status_at, text, sent_at FROM messages) m),
  (SELECT json_agg(c ORDER BY id)::text FROM conversations c),
  (SELECT json_agg(p)::text FROM pending_statuses p))`).Scan(&s)
		return s
	}
	before := snapshot()
	if _, err := pool.Exec(context.Background(), "UPDATE inbound_events SET state = 'pending', run_at = now()"); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, pool, 10*time.Second)
	if after := snapshot(); after != before {
		t.Errorf("rows changed on reprocessing:\nbefore %s\nafter  %s", before, after)
	}
}

// TestKilledMidBatchIsTakenOver: a process is kill -9'd while it holds a batch; after
// the lease another process processes every event.
func TestKilledMidBatchIsTakenOver(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	t0 := time.Now()
	payloads := make([]string, 20)
	for i := range payloads {
		payloads[i] = received(fmt.Sprintf("m-%d", i), "hi", t0)
	}
	insertEvents(t, pool, payloads...)
	cmd := child(t, "hang", url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "claimed" {
		t.Fatalf("child did not claim: %q %v", buf, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var processing int
	pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE state = 'processing'").Scan(&processing)
	if processing == 0 {
		t.Fatal("no claims held by the killed process; the test proves nothing")
	}
	start(t, url, Config{Lease: time.Second})
	counts := waitSettled(t, pool, 20*time.Second)
	if counts["processed"] != 20 {
		t.Errorf("queue = %v, want 20 processed", counts)
	}
}

// TestCrashingEventEndsDead: an event that kills its process every time it is
// handled runs out of attempts across restarts and ends dead; the others are
// processed, and the service stops crash-looping.
func TestCrashingEventEndsDead(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	t0 := time.Now()
	payloads := []string{received("poison", "boom", t0)}
	for i := range 10 {
		payloads = append(payloads, received(fmt.Sprintf("m-%d", i), "hi", t0))
	}
	insertEvents(t, pool, payloads...)
	crashes := 0
	for run := 0; ; run++ {
		if run == 10 {
			t.Fatalf("still crashing after %d runs", run)
		}
		err := child(t, "poison", url).Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 3 {
			crashes++
			continue
		}
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		break
	}
	var st string
	var attempts, messages int
	pool.QueryRow(context.Background(), "SELECT state, attempts FROM inbound_events WHERE payload->'data'->>'message_id' = 'poison'").Scan(&st, &attempts)
	pool.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&messages)
	if st != "dead" || attempts != 3 || crashes != 3 || messages != 10 {
		t.Errorf("poison %s after %d attempts, %d crashes, %d messages; want dead, 3, 3, 10", st, attempts, crashes, messages)
	}
}

// TestGracefulStopReleases: at stop, a batch that cannot finish in time is released
// without counting the attempt; one that can, finishes.
func TestGracefulStopReleases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		timeout   time.Duration
		wantState string
		wantTries int
	}{
		{"finishes within the deadline", 5 * time.Second, "processed", 1},
		{"released past the deadline", 50 * time.Millisecond, "pending", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool, url := newDB(t)
			entered := make(chan struct{}, 1)
			slow := func(payload []byte, at time.Time) (provider.Normalized, error) {
				entered <- struct{}{}
				time.Sleep(500 * time.Millisecond)
				return generic.Normalize(payload, at)
			}
			p := New(pool, url, Config{ShutdownTimeout: tc.timeout, SweepInterval: time.Hour,
				Normalizers: map[string]provider.Normalizer{"generic": slow}}, zapNop(), NewMetrics(nil))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			insertEvents(t, pool, received("m-1", "hi", time.Now()))
			<-entered
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			var st string
			var attempts int
			pool.QueryRow(context.Background(), "SELECT state, attempts FROM inbound_events").Scan(&st, &attempts)
			if st != tc.wantState || attempts != tc.wantTries {
				t.Errorf("after stop: %s with %d attempts, want %s with %d", st, attempts, tc.wantState, tc.wantTries)
			}
		})
	}
}

// TestBadEventInBatchCostsOnlyItself: one event whose rows Postgres refuses (a NUL
// byte in text) fails the batch's fast path; the fallback applies the others alone,
// and the bad one is dead after one attempt.
func TestBadEventInBatchCostsOnlyItself(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	withNUL := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		if err == nil && n.Message != nil && n.Message.Text == "nul" {
			n.Message.Text = "a\x00b"
		}
		return n, err
	}
	t0 := time.Now()
	payloads := []string{received("bad", "nul", t0)}
	for i := range 9 {
		payloads = append(payloads, received(fmt.Sprintf("m-%d", i), "fine", t0))
	}
	insertEvents(t, pool, payloads...) // before the processor starts: one batch
	start(t, url, Config{BatchSize: 64, Normalizers: map[string]provider.Normalizer{"generic": withNUL}})
	counts := waitSettled(t, pool, 10*time.Second)
	var retried int
	var lastErr string
	pool.QueryRow(context.Background(), "SELECT count(*) FILTER (WHERE attempts > 1) FROM inbound_events").Scan(&retried)
	pool.QueryRow(context.Background(), "SELECT last_error FROM inbound_events WHERE state = 'dead'").Scan(&lastErr)
	if counts["processed"] != 9 || counts["dead"] != 1 || retried != 0 || !strings.Contains(lastErr, "0x00") {
		t.Errorf("queue %v, %d retried, dead because %q; want 9 processed, 1 dead for its 0x00, none retried", counts, retried, lastErr)
	}
}

// TestNotificationBurstIsNotAQueryStorm: 10,000 events committed at once send 10,000
// notifications; the processor runs a few hundred claims, not 10,000.
func TestNotificationBurstIsNotAQueryStorm(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	p, reg := startWithRegistry(t, url, Config{BatchSize: 64, SweepInterval: time.Hour})
	pgtest.Eventually(t, "listener connected", 10*time.Second, func() (bool, error) { return p.ListenerConnected(), nil })
	t0 := time.Now()
	payloads := make([]string, 10000)
	for i := range payloads {
		payloads[i] = received(fmt.Sprintf("m-%d", i), "burst", t0)
	}
	insertEvents(t, pool, payloads...) // one statement, one commit: 10,000 notifications
	waitSettled(t, pool, 60*time.Second)
	time.Sleep(200 * time.Millisecond) // let the notifications still queued drain
	claims := 0.0
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "inbox_claims_total" {
			for _, m := range f.GetMetric() {
				claims += m.GetCounter().GetValue()
			}
		}
	}
	// 10,000 / 64 = 157 full batches, plus the empty claims that end each loop.
	if claims < 157 || claims > 1000 {
		t.Errorf("%v claim queries for a burst of 10,000 notifications, want between 157 and 1,000", claims)
	}
}

// TestChangesOncePerChange: applying events writes one change per change made (the
// conversation's creation, each message, each status that moved one forward), and
// replaying every event, which changes nothing, writes none.
func TestChangesOncePerChange(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	t0 := time.Now()
	insertEvents(t, pool, received("c1", "hi", t0), sent("c2", "+15552223333", t0), status("c2", "delivered", t0), status("c2", "sent", t0))
	start(t, url, Config{})
	waitSettled(t, pool, 20*time.Second)
	want := []string{"conversation.created|", "message.created|c1", "message.created|c2", "message.status_changed|c2"}
	changes := func() []string {
		rows, _ := pool.Query(context.Background(), `SELECT c.type || '|' || COALESCE(m.provider_message_id, '') FROM changes c LEFT JOIN messages m ON m.id = c.message_id ORDER BY 1`)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := changes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
	if _, err := RequeueState(context.Background(), pool, "pending", "", 100); err == nil || !strings.Contains(err.Error(), "only dead or processed events can be replayed") {
		t.Errorf("replaying pending events: %v, want them refused", err)
	}
	if n, err := RequeueState(context.Background(), pool, "processed", "", 100); err != nil || n != 4 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	waitSettled(t, pool, 20*time.Second)
	if got := changes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after replaying everything, changes = %v, want the same %v", got, want)
	}
}

// TestChangesAnnounced: after a batch commits, the processor sends NOTIFY
// inbox_changes (which other processes' change feeds wait on), and its LISTEN
// connection passes that channel's notifications to Config.Also.
func TestChangesAnnounced(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	ctx := context.Background()
	listen := pgtest.Listen(t, url, ChangesChannel)
	heard := make(chan struct{}, 100)
	start(t, url, Config{Also: map[string]func(){ChangesChannel: func() { heard <- struct{}{} }}})
	insertEvents(t, pool, received("ann", "hi", time.Now()))
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := listen.WaitForNotification(waitCtx); err != nil {
		t.Fatalf("no NOTIFY %s after the batch: %v", ChangesChannel, err)
	}
	for len(heard) > 0 { // the listener's (re)connection and the local wake-up
		<-heard
	}
	if _, err := pool.Exec(ctx, "SELECT pg_notify($1, '')", ChangesChannel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-heard:
	case <-time.After(30 * time.Second):
		t.Fatal("a notification on the changes channel did not reach Config.Also")
	}
}
