package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestRetentionEndToEnd: with INBOX_RETENTION=2s a processed event vanishes within
// seconds while its message stays; a dead event stays (INBOX_DEAD_RETENTION is 30
// days by default).
func TestRetentionEndToEnd(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	base, _ := startServe(t, map[string]string{
		"DATABASE_URL": url, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret, "INBOX_RETENTION": "2s",
	})
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, state, last_error, received_at)
VALUES ('generic', 'dead-one', '{}', 'dead', 'it broke', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-kept","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`
	req := providertest.Request(t, "generic", base, "", testSecret, "evt-retained", []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	resp.Body.Close()
	start := time.Now()
	for {
		var events, messages int
		pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE external_id = 'evt-retained'").Scan(&events)
		pool.QueryRow(context.Background(), "SELECT count(*) FROM messages WHERE provider_message_id = 'm-kept'").Scan(&messages)
		if events == 0 && messages == 1 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20s: %d events, %d messages; want the event deleted and its message kept", events, messages)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the processed event was deleted %s after its 200", time.Since(start).Round(time.Millisecond))
	var dead int
	pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE state = 'dead'").Scan(&dead)
	if dead != 1 {
		t.Errorf("%d dead events left, want the one (dead retention is 30 days)", dead)
	}
}
