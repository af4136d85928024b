package ingest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/pgtest"
	"inboxd/internal/store"
)

// lockTable holds ACCESS EXCLUSIVE on inbound_events (a migration or a DBA's LOCK
// TABLE) until the returned function is called.
func lockTable(t *testing.T, url string) (unlock func()) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(context.Background())
	if err == nil {
		_, err = tx.Exec(context.Background(), "LOCK TABLE inbound_events IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			tx.Rollback(context.Background())
			conn.Close(context.Background())
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// TestStalledDatabaseAnswers503InTime: while the table is locked, webhooks are
// answered 503 with Retry-After within the ingest timeout (never a hang), readiness
// says why, and once the lock is gone webhooks are stored again and readiness
// recovers.
func TestStalledDatabaseAnswers503InTime(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	const timeout = 500 * time.Millisecond
	s := newTestServerTimeout(t, url, Config{}, timeout)
	unlock := lockTable(t, url)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			start := time.Now()
			status, body, header := s.postFull(t, fmt.Sprintf("evt_%d", i), sampleGeneric(fmt.Sprint(i)))
			took := time.Since(start)
			if status != 503 || header.Get("Retry-After") == "" || !strings.Contains(body, "SETTING_INGEST_TIMEOUT") {
				t.Errorf("webhook during the lock: %d %s (Retry-After %q), want 503 naming the ingest timeout setting", status, body, header.Get("Retry-After"))
			}
			if took > timeout+2*time.Second {
				t.Errorf("webhook during the lock answered after %s, want about %s", took, timeout)
			}
		})
	}
	wg.Wait()
	if err := s.h.Ready(); err == nil {
		t.Error("Ready() = nil while commits stall")
	}
	unlock()
	pgtest.Eventually(t, "a webhook is stored after the lock", 10*time.Second, func() (bool, error) {
		status, _, _ := s.postFull(t, "evt_after", sampleGeneric("after"))
		return status == 200, nil
	})
	if err := s.h.Ready(); err != nil {
		t.Errorf("Ready() = %v after a successful commit", err)
	}
	if n := countEvents(t, s.pool, "evt_after"); n != 1 {
		t.Errorf("evt_after stored %d times", n)
	}
}

// TestRefusedBatchFailsOnlyItsGuiltyRequest: a group commit that Postgres refuses on
// its merits (here a key too long for the unique index, SQLSTATE 54000) is committed
// again one request at a time: the requests that shared the batch are stored, and
// only the guilty one gets an error, a permanent one.
func TestRefusedBatchFailsOnlyItsGuiltyRequest(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	s := newTestServer(t, url, Config{})
	unlock := lockTable(t, url)
	event := func(id string) []Event {
		return []Event{{Provider: "generic", ExternalID: id, Payload: []byte(`{}`), Headers: []byte(`{}`)}}
	}
	type answer struct {
		id  string
		err error
	}
	answers := make(chan answer, 6)
	write := func(id string) {
		_, err := s.writer.Write(context.Background(), event(id))
		answers <- answer{id, err}
	}
	// The first request holds the committer on the lock; the rest queue behind it
	// and are committed together once it is gone.
	go write("first")
	pgtest.Eventually(t, "the committer waits on the lock", 10*time.Second, func() (bool, error) { return commitRunning(s.writer), nil })
	// Incompressible, so too long for the index even compressed; no parser would pass
	// it (see checkID), so it is written straight to the Writer.
	var b strings.Builder
	for range 200 {
		b.WriteString(rand.Text())
	}
	guilty := b.String()
	for _, id := range []string{"a", "b", guilty, "c", "d"} {
		go write(id)
	}
	pgtest.Eventually(t, "five requests queued", 10*time.Second, func() (bool, error) { return len(s.writer.queue) == 5, nil })
	unlock()
	for range 6 {
		a := <-answers
		switch {
		case a.id == guilty && !errors.Is(a.err, errUnstorable):
			t.Errorf("the guilty request got %v, want errUnstorable", a.err)
		case a.id != guilty && a.err != nil:
			t.Errorf("request %s, which shared the guilty one's batch, got %v", a.id, a.err)
		}
	}
	var n int
	s.pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events").Scan(&n)
	if n != 5 {
		t.Errorf("%d events stored, want the 5 innocent ones", n)
	}
}

func commitRunning(w *Writer) bool {
	w.health.mu.Lock()
	defer w.health.mu.Unlock()
	return len(w.health.running) > 0
}

// TestReadOnlyResetsConnections: when the server says it cannot write (SQLSTATE 25006:
// a primary demoted by a failover, which keeps its connections), the writer drops its
// pool's connections, so that the next commit connects anew and finds the writable
// node (with target_session_attrs=read-write), instead of failing on the old ones.
func TestReadOnlyResetsConnections(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	admin, err := pgx.Connect(context.Background(), cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(context.Background(), "CREATE DATABASE inboxd"); err != nil {
		t.Fatal(err)
	}
	url := cluster.URL("inboxd")
	if _, err := store.Migrate(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, url, Config{})
	if status, body := s.post(t, "evt_1", "application/json", sampleGeneric("1"), s.secret); status != 200 {
		t.Fatalf("before: %d %s", status, body)
	}
	setReadOnly := func(on bool) {
		sql := "ALTER SYSTEM RESET default_transaction_read_only"
		if on {
			sql = "ALTER SYSTEM SET default_transaction_read_only = on"
		}
		if _, err := admin.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(context.Background(), "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // backends read the configuration between commands
	}
	setReadOnly(true)
	if status, body := s.post(t, "evt_2", "application/json", sampleGeneric("2"), s.secret); status != 503 {
		t.Fatalf("on a read-only server: %d %s, want 503", status, body)
	}
	before := s.pool.Stat().NewConnsCount()
	setReadOnly(false)
	if status, body := s.post(t, "evt_2", "application/json", sampleGeneric("2"), s.secret); status != 200 {
		t.Fatalf("after: %d %s", status, body)
	}
	if s.pool.Stat().NewConnsCount() == before {
		t.Error("the commit after a read-only error reused an old connection; want the pool's connections dropped")
	}
}
