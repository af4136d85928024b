package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
)

// startTail runs `inboxd tail args…` until the test ends, and waits until it listens.
func startTail(t *testing.T, url string, args ...string) (out, errs *syncBuffer) {
	t.Helper()
	out, errs = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"tail"}, args...), func(k string) string {
			return map[string]string{"DATABASE_URL": url}[k]
		}, out, errs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tail returned %v", err)
		}
	})
	pgtest.Eventually(t, "tail listens", 15*time.Second, func() (bool, error) { return strings.Contains(errs.String(), "listening"), nil })
	return out, errs
}

// insertArrivals stores n events of each provider, as ingest would (the insert
// trigger announces them).
func insertArrivals(t *testing.T, pool *pgxpool.Pool, tag string, n int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', $1 || '-g' || g, '{"type":"message.received"}'::jsonb FROM generate_series(1, $2) AS g
UNION ALL
SELECT 'twilio', $1 || '-t' || g, '{"MessageSid":"SM1","MessageStatus":"delivered"}'::jsonb FROM generate_series(1, $2) AS g
UNION ALL
SELECT 'meta', $1 || '-m' || g, '{"message":{"type":"image"}}'::jsonb FROM generate_series(1, $2) AS g`, tag, n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestTail: each arrival is one line (time, id, provider, external id, type), as it
// happens; --provider filters and --json prints objects.
func TestTail(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	insertArrivals(t, pool, "before", 1) // not shown: tail shows what arrives after it starts
	all, _ := startTail(t, url)
	twilio, _ := startTail(t, url, "--provider", "twilio")
	asJSON, _ := startTail(t, url, "--json")
	insertArrivals(t, pool, "new", 1)
	pgtest.Eventually(t, "three lines", 15*time.Second, func() (bool, error) { return strings.Count(all.String(), "\n") == 3, nil })
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \d+ +(\w+) +(\S+) +(.+)$`)
	var got []string
	typeAt := map[int]bool{}
	for _, l := range strings.Split(strings.TrimSpace(all.String()), "\n") {
		m := line.FindStringSubmatchIndex(l)
		if m == nil {
			t.Fatalf("line %q is not time, id, provider, external id, type", l)
		}
		got = append(got, l[m[2]:m[3]]+" "+l[m[4]:m[5]]+" "+l[m[6]:m[7]])
		typeAt[m[6]] = true
	}
	// The providers' names differ in length (generic, twilio, meta); each column is
	// as wide as the widest value printed, so the types line up.
	if len(typeAt) != 1 {
		t.Errorf("the types do not line up:\n%s", all.String())
	}
	if want := "generic new-g1 message.received|twilio new-t1 status delivered|meta new-m1 message image"; strings.Join(got, "|") != want {
		t.Errorf("tail printed %q, want %q", strings.Join(got, "|"), want)
	}
	pgtest.Eventually(t, "the JSON lines", 15*time.Second, func() (bool, error) { return strings.Count(asJSON.String(), "\n") == 3, nil })
	var a struct {
		ID         int64
		Provider   string
		ExternalID string `json:"external_id"`
		Type       string
	}
	if err := json.Unmarshal([]byte(strings.Split(asJSON.String(), "\n")[1]), &a); err != nil || a.ExternalID != "new-t1" || a.Type != "status delivered" {
		t.Errorf("--json line %q: %+v %v", strings.Split(asJSON.String(), "\n")[1], a, err)
	}
	time.Sleep(100 * time.Millisecond)
	if s := twilio.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "twilio") {
		t.Errorf("--provider twilio printed %q, want the one Twilio event", s)
	}
}

// TestTailUnderLoadAndReconnect: under a stream of arrivals every event is printed
// once; when its connection is killed, tail reconnects by itself and prints what
// arrived meanwhile.
func TestTailUnderLoadAndReconnect(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	out, errs := startTail(t, url)
	for i := range 20 {
		insertArrivals(t, pool, fmt.Sprintf("load%d", i), 50) // 3,000 events in 20 commits
	}
	pgtest.Eventually(t, "3,000 lines", 15*time.Second, func() (bool, error) { return strings.Count(out.String(), "\n") >= 3000, nil })
	if _, err := pool.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND query ILIKE 'listen%'`); err != nil {
		t.Fatal(err)
	}
	insertArrivals(t, pool, "gap", 10) // likely while tail is away
	pgtest.Eventually(t, "tail reconnects", 15*time.Second, func() (bool, error) { return strings.Contains(errs.String(), "reconnected"), nil })
	insertArrivals(t, pool, "after", 10)
	pgtest.Eventually(t, "3,060 lines", 15*time.Second, func() (bool, error) { return strings.Count(out.String(), "\n") >= 3060, nil })
	time.Sleep(200 * time.Millisecond)
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		seen[strings.Fields(l)[3]]++
	}
	if len(seen) != 3060 {
		t.Errorf("%d distinct events printed, want 3,060", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s printed %d times", id, n)
		}
	}
}

// printingTailer is a tailer on pool (of provider's events, or all; reading gaps in
// pages of gapPage, or the default) whose printer runs until the test ends, with its
// output and its errors collected.
func printingTailer(t *testing.T, pool *pgxpool.Pool, provider string, gapPage int) (tl *tailer, out, errs *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out, errs = &syncBuffer{}, &syncBuffer{}
	tl = &tailer{pool: pool, provider: provider, out: out, errs: errs, wake: make(chan struct{}, 1), gapPage: gapPage}
	go tl.print(ctx)
	return tl, out, errs
}

// storeArrival stores a generic event with an empty payload, as ingest would, and
// returns its id.
func storeArrival(t *testing.T, pool *pgxpool.Pool, externalID string) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', $1, '{}') RETURNING id`, externalID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// announce hands tl the notifications of the generic events ids, as the LISTEN
// connection would.
func announce(tl *tailer, ids ...int64) {
	for _, id := range ids {
		_ = tl.HandleNotification(context.Background(), &pgconn.Notification{Payload: fmt.Sprintf(`{"id":%d,"provider":"generic"}`, id)}, nil)
	}
}

// TestTailGapIsPrintedOnce: after a reconnection, tail lists what arrived while it
// was away, of its provider alone (a named sender's too), external ids without their
// control characters; a notification of an event that listing printed, which can
// come after it, is not printed again.
func TestTailGapIsPrintedOnce(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	tl, out, _ := printingTailer(t, pool, "generic", 0)
	if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload)
VALUES ('generic', 'g1', '{}'), ('twilio', 't1', '{}'), ('generic:acme', 'a1', '{}'), ('generic', e'e\x1b[2Je', '{}')`); err != nil {
		t.Fatal(err)
	}
	_ = tl.HandleBacklog(ctx, "", nil) // connected
	_ = tl.HandleBacklog(ctx, "", nil) // and again: what arrived meanwhile
	pgtest.Eventually(t, "the gap listed", 15*time.Second, func() (bool, error) { return strings.Count(out.String(), "\n") == 3, nil })
	var g1 int64
	g2 := storeArrival(t, pool, "g2")
	pool.QueryRow(ctx, `SELECT id FROM inbound_events WHERE external_id = 'g1'`).Scan(&g1)
	announce(tl, g1, g2) // g1's notification, late, then g2's
	pgtest.Eventually(t, "g2 printed", 15*time.Second, func() (bool, error) { return strings.Contains(out.String(), " g2 "), nil })
	if got := out.String(); strings.Count(got, "\n") != 4 || strings.Count(got, " g1 ") != 1 || strings.Contains(got, "t1") || !strings.Contains(got, " a1 ") ||
		!strings.Contains(got, " e[2Je ") || strings.Contains(got, "\x1b") {
		t.Errorf("tail printed:\n%q\nwant g1, a1 and e[2Je (without its escape) from the gap, then g2, each once, and no Twilio event", got)
	}
}

// TestTailGapIsReadWhole: a gap longer than a page is printed whole, page after
// page, each event once, and a late notification of an event of its first page is
// not printed again.
func TestTailGapIsReadWhole(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	tl, out, _ := printingTailer(t, pool, "", 3)
	var first int64
	if err := pool.QueryRow(ctx, `WITH ins AS (INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', 'gap-' || i, '{}' FROM generate_series(1, 10) i RETURNING id) SELECT min(id) FROM ins`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	_ = tl.HandleBacklog(ctx, "", nil) // connected
	_ = tl.HandleBacklog(ctx, "", nil) // and again: what arrived meanwhile
	pgtest.Eventually(t, "the gap listed", 15*time.Second, func() (bool, error) { return strings.Contains(out.String(), " gap-10 "), nil })
	after := storeArrival(t, pool, "after")
	announce(tl, first, after) // the first's notification, late, then the next arrival's
	pgtest.Eventually(t, "the next arrival printed", 15*time.Second, func() (bool, error) { return strings.Contains(out.String(), " after "), nil })
	got := out.String()
	for i := 1; i <= 10; i++ {
		if n := strings.Count(got, fmt.Sprintf(" gap-%d ", i)); n != 1 {
			t.Errorf("gap-%d printed %d times, want once", i, n)
		}
	}
	if n := strings.Count(got, "\n"); n != 11 {
		t.Errorf("tail printed %d lines, want 11:\n%s", n, got)
	}
}

// TestTailReadsAgainAfterAFailedRead: when reading the announced events fails (here
// the table is renamed away for a moment), tail says so, and prints them once the
// read works again, without waiting for another arrival.
func TestTailReadsAgainAfterAFailedRead(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	tl, out, errs := printingTailer(t, pool, "", 0)
	id := storeArrival(t, pool, "missed")
	if _, err := pool.Exec(ctx, `ALTER TABLE inbound_events RENAME TO inbound_events_away`); err != nil {
		t.Fatal(err)
	}
	announce(tl, id)
	pgtest.Eventually(t, "the failed read reported", 15*time.Second, func() (bool, error) { return strings.Contains(errs.String(), "trying again"), nil })
	if _, err := pool.Exec(ctx, `ALTER TABLE inbound_events_away RENAME TO inbound_events`); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, "the event printed after the failed read", 30*time.Second, func() (bool, error) {
		return strings.Contains(out.String(), " missed "), nil
	})
}
