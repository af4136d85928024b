package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// syncBuffer collects the service's log output safely across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startServe runs `inboxd serve` with env and returns its base URL once /readyz says
// ready; the service is stopped (and must exit cleanly) when the test ends.
func startServe(t *testing.T, env map[string]string) (string, *syncBuffer) {
	t.Helper()
	base, logs, stop := startServeStoppable(t, env)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve returned %v at shutdown, want nil", err)
		}
	})
	return base, logs
}

// startServeStoppable is startServe for a test that stops the service itself: stop
// cancels serve's context (as SIGTERM does) and returns what serve returned.
func startServeStoppable(t *testing.T, env map[string]string) (string, *syncBuffer, func() error) {
	t.Helper()
	base, logs, stop := launchServe(t, env)
	waitReady(t, base, 10*time.Second)
	return base, logs, stop
}

// waitReady waits until base/readyz answers 200; a refused connection (not listening
// yet) is waited out too.
func waitReady(t *testing.T, base string, within time.Duration) {
	t.Helper()
	pgtest.Eventually(t, base+"/readyz says ready", within, func() (bool, error) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
}

// launchServe runs `inboxd serve` with env and returns once it listens, ready or not.
func launchServe(t *testing.T, env map[string]string) (string, *syncBuffer, func() error) {
	t.Helper()
	getenv := func(k string) string {
		if v, ok := env[k]; ok || k != "INBOX_DEV" {
			return v
		}
		return "true" // the tests sign with the README's sample secret, the reference vector's
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- serve(ctx, nil, getenv, logs, logs, ready) }()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("serve exited before listening: %v\n%s", err, logs)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { stop() })
	return base, logs, stop
}

// TestServeEndToEnd: a signed webhook is acknowledged, then becomes a message.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	base, logs := startServe(t, map[string]string{
		"DATABASE_URL": url, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
	})
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`
	req := providertest.Request(t, "generic", base, "", testSecret, "evt-1", []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST = %d %s", resp.StatusCode, b)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var text, state string
		err := conn.QueryRow(context.Background(), `
SELECT m.text, e.state FROM messages m JOIN inbound_events e ON e.id = m.inbound_event_id
WHERE m.provider_message_id = 'm-1'`).Scan(&text, &state)
		if err == nil && text == "hi" && state == "processed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message not processed after 10s (last: %v)\n%s", err, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(logs.String(), testSecret) {
		t.Errorf("logs contain the secret")
	}
	// These metric names are a contract: dashboards and alerts use them. The queue
	// depth is sampled by the sweep, at start and then periodically; the processing
	// metrics are counted just after the commit that a reader may see first.
	wants := []string{
		`inbox_ingest_requests_total{code="200",provider="generic"} 1`,
		`inbox_events_ingested_total{provider="generic",result="new"} 1`,
		`inbox_events_processed_total{provider="generic",result="processed"} 1`,
		`inbox_event_latency_seconds_count 1`,
		`inbox_queue_depth{state="pending"}`,
		`inbox_listener_connected 1`,
	}
	var missing []string
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(10 * time.Millisecond) {
		resp, err = http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = nil
		for _, want := range wants {
			if !strings.Contains(string(metrics), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
	}
	for _, want := range missing {
		t.Errorf("/metrics lacks %s", want)
	}
}

// TestServeUnreachableDatabase: one clear line with what was tried and what to do.
func TestServeUnreachableDatabase(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/inboxd?sslmode=disable"}
	var out bytes.Buffer
	err := run(context.Background(), nil, func(k string) string { return env[k] }, &out, &out)
	if err == nil {
		t.Fatal("serve against a closed port returned nil")
	}
	msg := err.Error()
	for _, want := range []string{"127.0.0.1:1", "docker compose up -d db", "DATABASE_URL"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans several lines: %q", msg)
	}
}

// TestServeCreatesDatabase: a database that does not exist is created and migrated.
func TestServeCreatesDatabase(t *testing.T) {
	t.Parallel()
	name := "inboxd_created_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(func() { pgtest.DropDatabase(t, name) })
	url := pgtest.DatabaseURL(name)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate"}, func(k string) string {
		return map[string]string{"DATABASE_URL": url}[k]
	}, &out, &out); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var exists bool
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), "SELECT to_regclass('inbound_events') IS NOT NULL").Scan(&exists); err != nil || !exists {
		t.Errorf("inbound_events after migrate: exists=%v err=%v", exists, err)
	}
}

// TestServeSaysWhenTheFeedCannotMove: a database restored from another cluster, whose
// change feed carries transaction ids this server has not reached, starts and serves
// (ingest and processing do not depend on them) and says in its log, as an error,
// what stops the feed and how to fix it.
func TestServeSaysWhenTheFeedCannotMove(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	if _, err := pool.Exec(context.Background(), `INSERT INTO changes (type, conversation_id, data, xid) VALUES ('conversation.created', 1, '{}', '99999999999')`); err != nil {
		t.Fatal(err)
	}
	_, logs := startServe(t, map[string]string{"DATABASE_URL": url, "INBOX_ADDR": "127.0.0.1:0"})
	if l := logs.String(); !strings.Contains(l, `"level":"error"`) || !strings.Contains(l, "the change feed cannot move on this server") || !strings.Contains(l, "pg_resetwal -e 24 ") {
		t.Errorf("serve's log on a restored feed does not say what is wrong and what to do:\n%s", l)
	}
}

// TestServeSaysWhenTheServerIsTooSmall: a process whose pools may open more
// connections than the server accepts starts (it works until a backlog opens them
// all), and says so at once, with what to change.
func TestServeSaysWhenTheServerIsTooSmall(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	var limit int
	if err := pool.QueryRow(context.Background(), `SELECT current_setting('max_connections')::int`).Scan(&limit); err != nil {
		t.Fatal(err)
	}
	_, logs := startServe(t, map[string]string{"DATABASE_URL": url, "INBOX_ADDR": "127.0.0.1:0", "INBOX_WORKERS": strconv.Itoa(limit)})
	if l := logs.String(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, "the database server may run out of connections") || !strings.Contains(l, "lower INBOX_WORKERS") {
		t.Errorf("serve's log with INBOX_WORKERS=%d against max_connections=%d does not say what is wrong and what to do:\n%s", limit, limit, l)
	}
	// Behind a pooler (a listener URL of its own) the pooler's pool is what counts.
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	_, logs = startServe(t, map[string]string{"DATABASE_URL": url, "INBOX_LISTEN_DATABASE_URL": url + sep + "application_name=listener",
		"INBOX_ADDR": "127.0.0.1:0", "INBOX_WORKERS": strconv.Itoa(limit)})
	if l := logs.String(); strings.Contains(l, "run out of connections") {
		t.Errorf("serve warned of max_connections behind a pooler, whose pool is what counts:\n%s", l)
	}
}

// TestAPIReadsCannotStarveIngest: API reads that hold every connection they may have
// (here stuck behind a lock on conversations) leave webhooks theirs: a webhook is
// stored and answered 200, not 503 after waiting for a connection.
func TestAPIReadsCannotStarveIngest(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	base := startProviders(t, map[string]string{"DATABASE_URL": url, "INBOX_INGEST_TIMEOUT": "3s"})
	ctx := context.Background()
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var reads sync.WaitGroup
	for range 32 { // more than any pool of the service has connections
		reads.Go(func() {
			req, _ := http.NewRequest("GET", base+"/v1/conversations", nil)
			req.Header.Set("Authorization", "Bearer read-token")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	defer reads.Wait()
	pgtest.Eventually(t, "the API's reads waiting for the lock", time.Minute, func() (bool, error) {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return waiting >= 8, err
	})
	time.Sleep(200 * time.Millisecond) // the rest of the reads take what connections are left
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-starve","channel":"+15550001111","contact":"+15551234567","text":"hi"}}`)
	if status, _, ack := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-starve", body, time.Now())); status != 200 {
		t.Errorf("a webhook while the API's reads wait: %d %s, want 200", status, ack)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}
