package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
	"inboxd/internal/pgtest"
)

// TestThroughPgBouncer: inboxd behind PgBouncer in transaction mode (its defaults: no
// unknown startup parameters, no session state between transactions, no named
// prepared statements in 1.18): every provider's webhooks are stored and processed,
// read back through the API, replayed and counted; LISTEN and migrations use the
// direct connection. Each query mode that needs no named prepared statement works.
// inboxd runs as the least-privilege runtime role (deploy/postgres/roles.sql), the
// database migrated beforehand by the owner role, as a deployment should.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	bouncer := pgtest.StartPgBouncer(t, cluster)
	for _, mode := range []string{"exec", "cache_describe", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			db := "inboxd_" + mode
			direct := cluster.URL(db)
			migrateAsOwner(t, cluster, db)
			base := startProviders(t, map[string]string{
				"DATABASE_URL":              asRole("inboxd_runtime", bouncer.URL(db)) + "&default_query_exec_mode=" + mode,
				"INBOX_LISTEN_DATABASE_URL": asRole("inboxd_runtime", direct),
				"INBOX_MIGRATE":             "false",
			})
			pool, err := pgxpool.New(context.Background(), direct)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			for _, f := range []string{"twilio/inbound_sms.form", "twilio/status_delivered.form"} {
				if status, _, body := postTwilio(t, base, fixture(t, f)); status != 200 {
					t.Fatalf("%s: %d %s", f, status, body)
				}
			}
			if status, _, body := postMeta(t, base, fixture(t, "meta/batch.json")); status != 200 {
				t.Fatalf("meta batch: %d %s", status, body)
			}
			settle(t, pool)
			if got := len(rows(t, pool, "SELECT id FROM messages")); got != 3 {
				t.Errorf("%d messages through the pooler, want 3", got)
			}
			if got := apiMessages(t, base); len(got) != 3 {
				t.Errorf("API shows %q, want 3 messages", got)
			}
			// Replay and stats go through the pooler too.
			pool.Exec(context.Background(), "UPDATE inbound_events SET state = 'dead' WHERE id = 1")
			admin(t, base, "POST", "/v1/events/1/replay")
			settle(t, pool)
			var stats struct {
				Pending, Dead     int64
				ProcessedEstimate int64 `json:"processed_estimate"`
			}
			json.Unmarshal([]byte(admin(t, base, "GET", "/v1/stats")), &stats)
			if stats.Dead != 0 || stats.Pending != 0 || stats.ProcessedEstimate != 7 {
				t.Errorf("stats after the replay: %+v, want 7 processed", stats)
			}
			// The LISTEN connection is the direct one, not the pooler's.
			var listening int
			pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND query ILIKE 'listen%'`).Scan(&listening)
			if listening != 1 {
				t.Errorf("%d LISTEN connections on the server, want the one direct", listening)
			}
		})
	}
}

// admin calls an admin endpoint and returns the body, failing on anything but 200.
func admin(t *testing.T, base, method, path string) string {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	req.Header.Set("Authorization", "Bearer admin-token")
	status, _, body := do(t, req)
	if status != 200 {
		t.Fatalf("%s %s = %d %s", method, path, status, body)
	}
	return body
}

// TestPollOnly: with INBOX_POLL_ONLY there is no LISTEN connection; the process is
// ready, and events stored by another process (or by SQL) are processed by the sweep.
func TestPollOnly(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	base := startProviders(t, map[string]string{"DATABASE_URL": url, "INBOX_POLL_ONLY": "true", "INBOX_SWEEP_INTERVAL": "200ms"})
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready map[string]string
	json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if resp.StatusCode != 200 || ready["listener"] != "not used" {
		t.Errorf("readyz with INBOX_POLL_ONLY: %d %v, want 200 with the listener not used", resp.StatusCode, ready)
	}
	var listening int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND query ILIKE 'listen%'`).Scan(&listening)
	if listening != 0 {
		t.Errorf("%d LISTEN connections with INBOX_POLL_ONLY, want none", listening)
	}
	connected, _, err1 := bench.Metric(base, "inbox_listener_connected")
	pollOnly, _, err2 := bench.Metric(base, "inbox_poll_only")
	if err1 != nil || err2 != nil || connected != 0 || pollOnly != 1 {
		t.Errorf("metrics with INBOX_POLL_ONLY: inbox_listener_connected %v, inbox_poll_only %v (%v %v), want 0 and 1", connected, pollOnly, err1, err2)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload)
VALUES ('generic', 'from-elsewhere', '{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-e","channel":"+1","contact":"+2"}}')`); err != nil {
		t.Fatal(err)
	}
	settle(t, pool)
}

// TestReadReplica: with INBOX_READ_DATABASE_URL naming a streaming standby, the /v1
// reads come from it (while its replay is paused, a new message is not there yet) and
// the admin endpoints from the primary; once replay resumes, the message shows.
func TestReadReplica(t *testing.T) {
	t.Parallel()
	primary := pgtest.StartCluster(t)
	direct, err := pgxpool.New(context.Background(), primary.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := direct.Exec(context.Background(), "CREATE DATABASE inboxd"); err != nil {
		t.Fatal(err)
	}
	standby := primary.StartStandby()
	replica, err := pgxpool.New(context.Background(), standby.URL("inboxd"))
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	base := startProviders(t, map[string]string{"DATABASE_URL": primary.URL("inboxd"), "INBOX_READ_DATABASE_URL": standby.URL("inboxd")})
	waitConversations := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var page struct{ Data []json.RawMessage }
			req, _ := http.NewRequest("GET", base+"/v1/conversations", nil)
			req.Header.Set("Authorization", "Bearer read-token")
			status, _, body := do(t, req)
			json.Unmarshal([]byte(body), &page)
			if status == 200 && len(page.Data) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the read API shows %d conversations (%d %s), want %d", len(page.Data), status, body, want)
			}
		}
	}
	if status, _, body := postTwilio(t, base, fixture(t, "twilio/inbound_sms.form")); status != 200 {
		t.Fatalf("POST: %d %s", status, body)
	}
	waitConversations(1)
	if _, err := replica.Exec(context.Background(), "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	if status, _, body := postTwilio(t, base, fixture(t, "twilio/inbound_whatsapp_media.form")); status != 200 {
		t.Fatalf("POST: %d %s", status, body)
	}
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(admin(t, base, "GET", "/v1/events?state=processed"), "MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the admin API (the primary) never showed the second event processed")
		}
	}
	waitConversations(1) // the replica is paused: the second conversation is not there yet
	if _, err := replica.Exec(context.Background(), "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	waitConversations(2)
}
