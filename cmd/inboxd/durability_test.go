package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestNoAcknowledgedEventLostAcrossDatabaseCrash: webhooks flow while the database
// crashes (immediate shutdown, no checkpoint) and comes back. Senders behave like
// providers: anything but a 200 is retried. Every acknowledged webhook must end up
// stored once and processed, and inboxd must recover on its own (pool, listener,
// processor) without a restart.
func TestNoAcknowledgedEventLostAcrossDatabaseCrash(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	dbURL := cluster.URL("inboxd")
	base, logs := startServe(t, map[string]string{
		"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_SWEEP_INTERVAL": "200ms", "INBOX_LEASE": "2s",
	})
	const senders, each = 4, 150
	var mu sync.Mutex
	acked := map[string]bool{}
	retried := 0 // answers other than 200: the crash was seen
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("evt-%d-%d", s, i)
				body := fmt.Sprintf(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-%d-%d","channel":"+15550001111","contact":"+1555000%04d","text":"hi"}}`, s, i, i%50)
				for try := 0; ; try++ {
					if try == 300 {
						t.Errorf("%s never acknowledged", id)
						return
					}
					req := providertest.Request(t, "generic", base, "", testSecret, id, []byte(body), time.Now())
					resp, err := client.Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == 200 {
							mu.Lock()
							acked[id] = true
							mu.Unlock()
							break
						}
					}
					mu.Lock()
					retried++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond) // a provider's retry, much faster
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // some acknowledged and processed already
	cluster.Crash()
	time.Sleep(time.Second)
	cluster.Start()
	wg.Wait()

	conn, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	settle(t, conn)
	var events, messages int
	conn.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events").Scan(&events)
	conn.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&messages)
	rows, _ := conn.Query(context.Background(), "SELECT external_id FROM inbound_events")
	stored, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	have := map[string]bool{}
	for _, id := range stored {
		have[id] = true
	}
	for id := range acked {
		if !have[id] {
			t.Errorf("acknowledged webhook %s is not in the database", id)
		}
	}
	if len(acked) != senders*each || events != senders*each || messages != senders*each {
		t.Errorf("acknowledged %d, stored %d, messages %d; want %d of each", len(acked), events, messages, senders*each)
	}
	if retried == 0 {
		t.Errorf("no request failed: the crash missed the traffic, and the test proves nothing")
	}
	t.Logf("%d answers other than 200 during the outage, all retried", retried)
	if !strings.Contains(logs.String(), "listening") {
		t.Errorf("the listener never (re)connected:\n%s", logs)
	}
}
