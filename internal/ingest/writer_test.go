package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
)

// startWriter runs a Writer on a pool of its own, whose server notices it returns.
func startWriter(t *testing.T, url string, cfg WriterConfig, inTx func(context.Context, pgx.Tx, []Stored) error) (*Writer, *prometheus.Registry, func() []string) {
	t.Helper()
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	notices := pgtest.CollectNotices(pc)
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w := NewWriter(pool, zap.NewNop(), NewMetrics(reg), cfg)
	if inTx != nil {
		w.AlsoInTx(inTx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pool.Close() })
	return w, reg, notices
}

func event(id string) []Event {
	return []Event{{Provider: "generic", ExternalID: id, Payload: []byte(sampleGeneric(id)), Headers: []byte("{}")}}
}

// commitSizes returns how many commits carried each number of requests.
func commitSizes(t *testing.T, reg *prometheus.Registry) map[float64]uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[float64]uint64{}
	for _, f := range families {
		if f.GetName() != "inbox_ingest_commit_requests" {
			continue
		}
		var below uint64
		for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
			if n := b.GetCumulativeCount() - below; n > 0 {
				sizes[b.GetUpperBound()] = n
			}
			below = b.GetCumulativeCount()
		}
	}
	return sizes
}

// TestCommitWait: a request after a quiet spell is committed at once; requests that
// follow within CommitWait of that commit wait for it to pass and share one
// commit. The wait here is long (2 s) so that neither outcome can be a matter of timing.
// No commit draws a notice from the server (its settings are set_config, not SET
// LOCAL in an implicit transaction), and a redelivery finds the stored event's id.
func TestCommitWait(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	const wait = 4 * time.Second
	w, reg, notices := startWriter(t, url, WriterConfig{CommitWait: wait}, nil)
	ctx := context.Background()

	start := time.Now()
	first, err := w.Write(ctx, event("quiet"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > wait/2 { // waiting would take the whole wait; half is a wide margin
		t.Errorf("the first request after a quiet spell took %v, want it committed without waiting %s", took, wait)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { _, errs[i] = w.Write(ctx, event(fmt.Sprintf("close-%d", i))) })
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	again, err := w.Write(ctx, event("quiet"))
	if err != nil {
		t.Fatal(err)
	}
	if !again[0].Duplicate || again[0].ID != first[0].ID {
		t.Errorf("redelivery = %+v, want a duplicate of %+v", again[0], first[0])
	}
	if got := commitSizes(t, reg); got[1] != 2 || got[4] != 1 { // bucket 4 holds the commit of 3
		t.Errorf("commits by size = %v, want the quiet one and the redelivery alone and the three close ones together", got)
	}
	if n := notices(); len(n) > 0 {
		t.Errorf("commits drew %d notices, first: %s", len(n), n[0])
	}
}

// TestAlsoInTx: the hook runs in the commit's transaction with the events it
// inserted (not those it found stored already), in id order, each with its provider,
// receipt time and payload as the row has them; when it fails, nothing commits and
// the requests are answered unavailable.
func TestAlsoInTx(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	var mu sync.Mutex
	var seen [][]Stored
	fail := false
	w, _, _ := startWriter(t, url, WriterConfig{}, func(ctx context.Context, tx pgx.Tx, stored []Stored) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, stored)
		for _, s := range stored {
			var same bool
			err := tx.QueryRow(ctx, `
SELECT provider = $2 AND received_at = $3 AND payload = $4::jsonb FROM inbound_events WHERE id = $1`,
				s.ID, s.Provider, s.ReceivedAt, string(s.Payload)).Scan(&same)
			if err != nil {
				return fmt.Errorf("the hook's event %d: %w", s.ID, err)
			}
			if !same {
				return fmt.Errorf("the hook's event %d differs from its row", s.ID)
			}
		}
		if fail {
			return errors.New("hook refused")
		}
		return nil
	})
	// b twice in one request: one row, one event for the hook.
	res, err := w.Write(ctx, slices.Concat(event("a"), event("b"), event("b")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ctx, event("a")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if _, err := w.Write(ctx, event("c")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("write with a failing hook = %v, want ErrUnavailable", err)
	}
	mu.Lock()
	defer mu.Unlock()
	ids := func(stored []Stored) []int64 {
		var ids []int64
		for _, s := range stored {
			ids = append(ids, s.ID)
		}
		return ids
	}
	if want := []int64{res[0].ID, res[1].ID}; len(seen) != 3 || !slices.Equal(ids(seen[0]), want) || len(seen[1]) != 0 {
		t.Errorf("hook saw %d commits, first with ids %v; want ids %v, then none (a redelivery), then c's", len(seen), ids(seen[0]), want)
	}
	if n := countEvents(t, pool, "c"); n != 0 {
		t.Errorf("event c stored %d times although its commit's hook failed", n)
	}
}

// TestSelectExistingPlan: the lookup of redelivered keys reads the unique index,
// also in the generic plan of a table the planner believes empty (a new database),
// which a prepared statement would otherwise keep as the table grows.
func TestSelectExistingPlan(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	p := pgtest.Plan(t, pool, true, selectExisting, pgtest.Literal("NULL"), pgtest.Literal("NULL"))
	if strings.Contains(p, "Seq Scan") || !strings.Contains(p, "inbound_events_provider_external_id_key") {
		t.Errorf("generic plan of selectExisting: %s, want an index scan of inbound_events_provider_external_id_key", p)
	}
}

// TestLargeRequestDoesNotHoldSmallOnes: while a large request's insert is held up
// (here: waiting for a row lock another transaction holds on one of its keys, as a
// long insert of 500 messages would, only for as long as the test likes), small
// requests are committed by the other committer and answered; the large one is
// committed once the lock goes. With one committer for both, the small ones would
// wait behind it. While it waits, the writer is not ready, although the other
// committer's commits succeed.
func TestLargeRequestDoesNotHoldSmallOnes(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	const timeout = 20 * time.Second
	w, _, _ := startWriter(t, url, WriterConfig{Timeout: timeout}, nil)
	ctx := context.Background()
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'big-0', '{}')`); err != nil {
		t.Fatal(err)
	}
	var large []Event
	for i := range bulkEvents + 1 {
		large = append(large, event(fmt.Sprintf("big-%d", i))...)
	}
	largeDone := make(chan error, 1)
	go func() { _, err := w.Write(ctx, large); largeDone <- err }()
	// The large insert is waiting on the lock.
	pgtest.Eventually(t, "the large insert to wait for the lock", time.Minute, func() (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO inbound_events%'`).Scan(&n)
		return n > 0, err
	})
	for i := range 3 {
		if _, err := w.Write(ctx, event(fmt.Sprintf("small-%d", i))); err != nil {
			t.Fatalf("small request %d while the large one waits: %v", i, err)
		}
	}
	select {
	case err := <-largeDone:
		t.Fatalf("the large request finished while its key was locked: %v", err)
	default:
	}
	// Past half the timeout the stuck commit makes the writer unready (the small
	// ones' commits ended meanwhile, and must not hide it).
	pgtest.Eventually(t, "the writer unready while a commit is stuck", timeout, func() (bool, error) {
		return w.Ready() != nil, nil
	})
	if _, err := w.Write(ctx, event("small-after")); err != nil {
		t.Fatalf("a small request while the large one is stuck: %v", err)
	}
	if w.Ready() == nil {
		t.Error("a small commit's end made the writer ready while the large commit is stuck")
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-largeDone; err != nil {
		t.Fatalf("the large request after the lock went: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events`).Scan(&n); err != nil || n != bulkEvents+1+4 {
		t.Errorf("%d events stored (%v), want %d", n, err, bulkEvents+1+4)
	}
}

func TestIsBulk(t *testing.T) {
	small := event("a")
	big := make([]Event, bulkEvents+1)
	heavy := []Event{{Payload: make([]byte, bulkBytes+1)}}
	for _, tc := range []struct {
		events []Event
		want   bool
	}{{small, false}, {big[:bulkEvents], false}, {big, true}, {heavy, true}, {[]Event{{Payload: make([]byte, bulkBytes)}}, false}} {
		if got := isBulk(tc.events); got != tc.want {
			t.Errorf("isBulk(%d events) = %v", len(tc.events), got)
		}
	}
}

// TestOverlappingInsertsDoNotDeadlock: two processes' commits holding the same keys
// in opposite orders (a provider's redelivery storm sent to two instances) both
// succeed. insertEvents sorts its rows by key, so both take the keys in one order;
// unsorted, each waits on a key the other inserted and has not committed, and
// Postgres aborts one as a deadlock. The middle key is inserted first, uncommitted,
// so that both are under way, each waiting, when it is rolled back.
func TestOverlappingInsertsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	const keys = 20
	key := func(k int) string { return fmt.Sprintf("k%03d", k) }
	args := func(reverse bool) []any {
		cols := make([][]string, 7)
		var adopt []bool
		for i := range keys {
			k := i
			if reverse {
				k = keys - 1 - i
			}
			for c, v := range []string{"generic", key(k), "{}", "{}", "", "", ""} {
				cols[c] = append(cols[c], v)
			}
			adopt = append(adopt, false)
		}
		return []any{cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], int64(0), "", adopt}
	}
	insert := func(reverse bool) func() error {
		return func() error { _, err := pool.Exec(ctx, insertEvents, args(reverse)...); return err }
	}
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', $1, '{}')`, key(keys/2))
		return err
	}, false, insert(false), insert(true))
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events").Scan(&n); err != nil || n != keys {
		t.Errorf("stored %d events (%v), want %d, each key once", n, err, keys)
	}
}
