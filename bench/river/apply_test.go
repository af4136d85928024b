package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestApplyEvents: what another queue's job does with event ids (the River baseline):
// the events' messages and statuses are written, each event is marked processed with
// one attempt and its contact (as inboxd's finish records it), an event whose payload
// can never apply is dead without costing the others, and applying the same ids
// again changes nothing.
func TestApplyEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	at := time.Now().UTC().Format(time.RFC3339)
	_, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', 'evt-' || n, payload::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS t(payload, n)`, []string{
		`{"type":"message.sent","timestamp":"` + at + `","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"out"}}`,
		`{"type":"message.status","timestamp":"` + at + `","data":{"message_id":"m-1","status":"read"}}`,
		`{"type":"message.received","timestamp":"` + at + `","data":{"message_id":"m-2","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`,
		`{"type":"message.received","data":{}}`, // no message id: permanent
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, "SELECT id FROM inbound_events ORDER BY id")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := applyEvents(ctx, pool, ids); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	err = pool.QueryRow(ctx, `
SELECT string_agg(state || '/' || attempts || '/' || COALESCE(contact, '-'), ' ' ORDER BY id) || ' | ' ||
       (SELECT string_agg(provider_message_id || '/' || status, ' ' ORDER BY provider_message_id) FROM messages)
FROM inbound_events`).Scan(&got)
	if err != nil {
		t.Fatal(err)
	}
	if want := "processed/1/+15552223333 processed/1/- processed/1/+15552223333 dead/1/- | m-1/read m-2/received"; got != want {
		t.Errorf("after applying twice: %s, want %s", got, want)
	}
	var lastErr string
	pool.QueryRow(ctx, "SELECT last_error FROM inbound_events WHERE state = 'dead'").Scan(&lastErr)
	if lastErr == "" {
		t.Error("the dead event has no last_error")
	}
}
