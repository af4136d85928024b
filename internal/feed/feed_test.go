package feed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// addChange inserts one change in tx, as the processor's apply does.
func addChange(t *testing.T, tx pgx.Tx, conversation int64) {
	t.Helper()
	if _, err := tx.Exec(context.Background(), `INSERT INTO changes (type, conversation_id, data) VALUES ('contact.erased', $1, jsonb_build_object('conversation_id', $1::bigint))`, conversation); err != nil {
		t.Fatal(err)
	}
}

// commitHeldBack commits a change of conversation behind an older transaction, which it
// returns still open: until that ends, the change is committed but not final.
func commitHeldBack(t *testing.T, pool *pgxpool.Pool, conversation int64) (older pgx.Tx) {
	t.Helper()
	ctx := context.Background()
	older = begin(t, pool)
	if _, err := older.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	tx := begin(t, pool)
	addChange(t, tx, conversation)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return older
}

func begin(t *testing.T, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	return tx
}

// follower reads the feed as a consumer following next_cursor does.
type follower struct {
	cursor Cursor
	seen   []int64 // conversation ids, in the order read
}

func (f *follower) poll(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	changes, err := Read(context.Background(), pool, f.cursor, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		f.seen = append(f.seen, c.ConversationID)
		f.cursor = c.Cursor()
	}
}

// TestOutOfOrderCommits: transaction 1 writes a change first, transaction 2 writes
// one after it and commits first. A follower reading between the commits must not
// move past transaction 1's change: afterwards it has read both, once each, 1 before
// 2. A reader of "seq > cursor" reads 2, then never 1.
func TestOutOfOrderCommits(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	var f follower
	t1 := begin(t, pool)
	addChange(t, t1, 1)
	t2 := begin(t, pool)
	addChange(t, t2, 2)
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.poll(t, pool)
	}
	if len(f.seen) != 0 {
		t.Errorf("read %v while the earlier transaction is open, want nothing yet", f.seen)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Another test's transaction anywhere on the server may hold the watermark back
	// for a moment: poll until both came (or far too long passed).
	for deadline := time.Now().Add(30 * time.Second); len(f.seen) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.poll(t, pool)
	}
	f.poll(t, pool)
	if fmt.Sprint(f.seen) != "[1 2]" {
		t.Errorf("follower read %v, want [1 2]: each change once, the earlier transaction's first", f.seen)
	}
}

// TestFollowersMissNothing: eight writers commit changes in random overlapping
// transactions while a follower polls; it reads every committed change exactly once
// (rolled-back ones never).
func TestFollowersMissNothing(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	const writers, each = 8, 60
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				id := int64(w*1000 + i)
				tx.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES ('contact.erased', $1, '{}')`, id)
				time.Sleep(time.Duration(i%3) * time.Millisecond)
				if i%10 == 9 {
					tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var f follower
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		f.poll(t, pool)
	}
	// The last changes are final once every transaction older than them has ended,
	// other tests' on the same server included: poll until all came, or far too long.
	const committed = writers * (each - each/10)
	for deadline := time.Now().Add(30 * time.Second); len(f.seen) < committed && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.poll(t, pool)
	}
	f.poll(t, pool)
	seen := map[int64]int{}
	for _, id := range f.seen {
		seen[id]++
	}
	for w := range writers {
		for i := range each {
			id, want := int64(w*1000+i), 1
			if i%10 == 9 {
				want = 0
			}
			if seen[id] != want {
				t.Errorf("change of conversation %d read %d times, want %d", id, seen[id], want)
			}
		}
	}
}

// quietHub is a hub whose readers never read again unprompted (within a test): only
// a notification, or a backoff of their own, wakes them.
func quietHub() *Hub {
	h := NewHub()
	h.recheck = time.Hour
	return h
}

// TestHub: Notify wakes every reader that took Next before it, and only those.
func TestHub(t *testing.T) {
	h := NewHub()
	a, b := h.Next(), h.Next()
	h.Notify()
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Error("a reader that took Next before Notify was not woken")
		}
	}
	select {
	case <-h.Next():
		t.Error("Next after Notify is already closed: readers would spin")
	default:
	}
}

// TestWaitWakesOnCommit: a long poll with nothing to read returns with the change
// as soon as the hub is notified of its commit, long before its wait ends. The hub
// never rechecks on its own here, so only the notification can wake it.
func TestWaitWakesOnCommit(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	hub := quietHub()
	got := make(chan []Change, 1)
	start := time.Now()
	go func() {
		changes, err := Wait(context.Background(), pool, hub, Cursor{}, 10, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- changes
	}()
	time.Sleep(50 * time.Millisecond)
	tx := begin(t, pool)
	addChange(t, tx, 7)
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	hub.Notify()
	select {
	case changes := <-got:
		if len(changes) != 1 || changes[0].ConversationID != 7 {
			t.Errorf("Wait = %+v, want the change", changes)
		}
		t.Logf("returned %v after the commit (waited %v in all)", time.Since(committed), time.Since(start))
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return on the notification")
	}
}

func TestParseCursor(t *testing.T) {
	for in, ok := range map[string]bool{"": true, "12.34": true, "0.0": true, "abc": false, "1": false, "1.-2": false, "x.1": false} {
		if _, err := ParseCursor(in); (err == nil) != ok {
			t.Errorf("ParseCursor(%q) = %v", in, err)
		}
	}
	c := Cursor{XID: 123, Seq: 45}
	if back, err := ParseCursor(c.String()); err != nil || back != c {
		t.Errorf("round trip %v = %v, %v", c, back, err)
	}
	if _, err := ParseCursor(strings.Repeat("9", 100)); err == nil {
		t.Error("a huge cursor parsed")
	}
}

// TestReadPlans: the feed's reads, planned generic with their settings on tables
// just created and again on tables analyzed with a few rows (the plans a
// connection caches early in a database's life), read changes by their primary key
// and each change's message by its id: never a scan of either table, which would
// cost what the tables hold on every page a follower reads.
func TestReadPlans(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	plans := pgtest.PlanPool(t, url, readPlan...)
	check := func(when string) {
		for name, sql := range map[string]string{"read": read, "positions": positions, "heldBack": heldBack} {
			p := strings.Join(strings.Fields(pgtest.GenericPlan(t, plans, sql)), " ")
			for _, bad := range []string{"Seq Scan changes", "Seq Scan messages", pgtest.WholeIndex} {
				if strings.Contains(p, bad) {
					t.Errorf("%s, %s: generic plan %s has %s", when, name, p, bad)
				}
			}
			if name == "read" && !strings.Contains(p, "messages_pkey") {
				t.Errorf("%s, %s: generic plan %s, want messages read by messages_pkey", when, name, p)
			}
		}
	}
	check("never analyzed")
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO conversations (provider, channel_address, contact_address, last_message_at) VALUES ('generic', '+1', '+2', now())`,
		`INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, status, sent_at, inbound_event_id)
		 SELECT 'generic', 'm' || i, 1, 'inbound', '+2', '+1', 'received', now(), i FROM generate_series(1, 3) i`,
		`INSERT INTO changes (type, conversation_id, message_id, status) SELECT 'message.created', 1, i, 'received' FROM generate_series(1, 3) i`,
		`ANALYZE conversations, messages, changes`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	check("analyzed with three rows")

	// And Read runs with them: on these tables, planned with the defaults, it scans
	// messages.
	scans := func() (seq, idx int64) {
		err := pool.QueryRow(ctx, `SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'messages'`).Scan(&seq, &idx)
		if err != nil {
			t.Fatal(err)
		}
		return seq, idx
	}
	seq0, idx0 := scans()
	// The changes are final (served) once every transaction older than theirs has
	// ended, anywhere on the server: other packages' tests may hold them back a while.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		page, err := Read(ctx, pool, Cursor{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Read = %d changes, want 3", len(page))
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		seq, idx := scans()
		if seq > seq0 {
			t.Fatalf("Read scanned messages sequentially (%d scans)", seq-seq0)
		}
		if idx > idx0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read's index scans of messages never showed in pg_stat_user_tables")
		}
	}
}

// FuzzParseCursor: any text is refused or read without a panic, and a cursor it reads
// is one a consumer could have been handed: its own String reads back to it.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "12.34", "0.0", "1.-2", "18446744073709551615.9223372036854775807", "1.+2", strings.Repeat("9", 30)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		if c.Seq < 0 {
			t.Fatalf("ParseCursor(%q) = %+v: a negative sequence", s, c)
		}
		if back, err := ParseCursor(c.String()); err != nil || back != c {
			t.Fatalf("ParseCursor(%q) = %+v, whose String %q reads back as %+v, %v", s, c, c.String(), back, err)
		}
	})
}

// TestWaitSeesHeldBackChanges: a committed change held back by an older transaction
// is seen soon after that transaction ends, though nothing notifies of it: Wait backs
// off and reads again (the hub here would otherwise wait an hour).
func TestWaitSeesHeldBackChanges(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	older := commitHeldBack(t, pool, 9)
	got := make(chan []Change, 1)
	go func() {
		changes, err := Wait(ctx, pool, quietHub(), Cursor{}, 10, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- changes
	}()
	time.Sleep(50 * time.Millisecond) // Wait finds the change held back
	if err := older.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if changes := <-got; len(changes) != 1 || changes[0].ConversationID != 9 {
		t.Errorf("Wait = %+v, want the change once the older transaction ended", changes)
	}
}

// TestFeedOrderIsByTransaction: the feed is in (xid, seq) order, not seq order. A
// transaction that took its xid first and wrote its change last comes first; read
// one change at a time in seq order, a follower would move past it and never read it.
func TestFeedOrderIsByTransaction(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	first := begin(t, pool)
	if _, err := first.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	second := begin(t, pool)
	addChange(t, second, 2) // the lower seq, the higher xid
	if err := second.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	addChange(t, first, 1)
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var seen []int64
	var c Cursor
	pgtest.Eventually(t, "both changes read", 30*time.Second, func() (bool, error) {
		changes, err := Read(ctx, pool, c, 1)
		for _, ch := range changes {
			seen, c = append(seen, ch.ConversationID), ch.Cursor()
		}
		return len(seen) >= 2, err
	})
	if fmt.Sprint(seen) != "[1 2]" {
		t.Errorf("read %v, want [1 2]: the transaction that took its xid first, first", seen)
	}
}

// TestMessageChangeObject: a message's change is served as the message with the
// status, status time and error the change recorded, not the message's current ones.
func TestMessageChangeObject(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	var message int64
	err := pool.QueryRow(ctx, `
WITH e AS (INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'm', '{}') RETURNING id),
     c AS (INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
           VALUES ('generic', '+15550100', '+15550199', now()) RETURNING id)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, status_at, sent_at, inbound_event_id)
SELECT 'generic', 'm1', c.id, 'outbound', '+15550100', '+15550199', 'hi', 'delivered', now(), now(), e.id FROM c, e
RETURNING id`).Scan(&message)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO changes (type, conversation_id, message_id, status, status_at, error)
SELECT 'message.status_changed', conversation_id, id, 'failed', '2026-01-02T03:04:05Z', '{"code": "30003"}' FROM messages WHERE id = $1`, message); err != nil {
		t.Fatal(err)
	}
	var changes []Change
	pgtest.Eventually(t, "the change read", 30*time.Second, func() (bool, error) {
		var err error
		changes, err = Read(ctx, pool, Cursor{}, 10)
		return len(changes) > 0, err
	})
	got := string(changes[0].Data)
	for _, want := range []string{`"status":"failed"`, `"status_at":"2026-01-02T03:04:05Z"`, `"code":"30003"`, `"text":"hi"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the change's object %s lacks %s", got, want)
		}
	}
}

// TestRender: a change whose object is gone is an error, never an empty object.
func TestRender(t *testing.T) {
	for _, typ := range Types {
		if _, err := render(typ, nil); err == nil {
			t.Errorf("render(%s, nil): no error", typ)
		}
	}
}

// TestWaitRechecksWithoutNotification: a change committed with no notification (one
// lost with the listener's connection) is still seen by a long poll, at its next
// recheck, long before its wait ends.
func TestWaitRechecksWithoutNotification(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	got := make(chan []Change, 1)
	go func() {
		changes, err := Wait(context.Background(), pool, NewHub(), Cursor{}, 10, 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- changes
	}()
	time.Sleep(50 * time.Millisecond)
	tx := begin(t, pool)
	addChange(t, tx, 5)
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if changes := <-got; len(changes) != 1 || changes[0].ConversationID != 5 {
		t.Errorf("Wait = %+v, want the change, seen at a recheck (every %s) within the 30 s wait", changes, NewHub().recheck)
	}
}

// afterFirstBatch is a pgx tracer that runs do once, right after the first batch its
// pool sends once armed ends: in Wait, after a round's read.
type afterFirstBatch struct {
	armed chan struct{}
	once  sync.Once
	do    func()
}

func (a *afterFirstBatch) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (a *afterFirstBatch) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (a *afterFirstBatch) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (a *afterFirstBatch) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (a *afterFirstBatch) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {
	select {
	case <-a.armed:
		a.once.Do(a.do)
	default:
	}
}

// poolDoingAfterARead returns a pool on url that runs do right after the first batch
// it sends (a read's).
func poolDoingAfterARead(t *testing.T, url string, do func()) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	tracer := &afterFirstBatch{armed: make(chan struct{}), do: do}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil { // the connection is made before the tracer is armed
		t.Fatal(err)
	}
	close(tracer.armed)
	return pool
}

// waitAMinute long-polls the feed from its start for up to a minute with a hub that
// never rechecks on its own, and fails unless it returns the one change wanted.
func waitAMinute(t *testing.T, pool *pgxpool.Pool, hub *Hub, conversation int64, what string) {
	t.Helper()
	const wait = time.Minute
	start := time.Now()
	changes, err := Wait(context.Background(), pool, hub, Cursor{}, 10, wait)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].ConversationID != conversation {
		t.Errorf("Wait = %+v after %v, want %s, at once (its wait is %v)", changes, time.Since(start), what, wait)
	}
}

// TestWaitSeesACommitDuringItsRead: a change committed, and notified, while a long
// poll's read runs (after the read's snapshot, before the poll waits) wakes the poll
// at once. A reader that asked the hub for its next notification only after reading
// would sleep through this one.
func TestWaitSeesACommitDuringItsRead(t *testing.T) {
	t.Parallel()
	writer, url := pgtest.NewPool(t)
	ctx := context.Background()
	hub := quietHub()
	reader := poolDoingAfterARead(t, url, func() {
		if _, err := writer.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES ('contact.erased', 3, '{}')`); err != nil {
			t.Error(err)
		}
		hub.Notify()
	})
	waitAMinute(t, reader, hub, 3, "the change committed during its read")
}

// TestWaitSeesAHolderEndDuringItsRead: a committed change is held back by an older
// transaction that ends, without a notification, while a long poll reads. The poll
// read nothing, but must read again soon: its check that changes were held back is
// from before its read. Checked after the read, it would find nothing held back, and
// the poll would sleep until a notification or its recheck.
func TestWaitSeesAHolderEndDuringItsRead(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	older := commitHeldBack(t, pool, 4)
	reader := poolDoingAfterARead(t, url, func() {
		if err := older.Rollback(ctx); err != nil {
			t.Error(err)
		}
	})
	waitAMinute(t, reader, quietHub(), 4, "the change once the older transaction ended")
}

// TestForeignTransactionIDs: a feed whose changes carry transaction ids the server
// has not reached (restored from another cluster) is reported, with the pg_resetwal
// epoch that fixes it; a feed of this server's own is not.
func TestForeignTransactionIDs(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES ('conversation.created', 1, '{}')`); err != nil {
		t.Fatal(err)
	}
	if err := CheckTransactionIDs(ctx, pool); err != nil {
		t.Errorf("a feed written by this server: %v", err)
	}
	// 99,999,999,999 is epoch 23: pg_resetwal -e 24 puts the server past it.
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data, xid) VALUES ('conversation.created', 2, '{}', '99999999999')`); err != nil {
		t.Fatal(err)
	}
	if err := CheckTransactionIDs(ctx, pool); !errors.Is(err, ErrForeignTransactionIDs) || !strings.Contains(err.Error(), "pg_resetwal -e 24 ") {
		t.Errorf("a feed restored from another cluster: %v, want ErrForeignTransactionIDs naming pg_resetwal -e 24", err)
	}
	// Its changes all deleted by retention, a subscription's position still says so.
	if _, err := pool.Exec(ctx, `DELETE FROM changes;
INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq) VALUES ('https://crm.example.com/hooks', '{message.created}', 'whsec_x', '99999999999', 2)`); err != nil {
		t.Fatal(err)
	}
	if err := CheckTransactionIDs(ctx, pool); !errors.Is(err, ErrForeignTransactionIDs) {
		t.Errorf("a subscription positioned by another cluster: %v, want ErrForeignTransactionIDs", err)
	}
}
