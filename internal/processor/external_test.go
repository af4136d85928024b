package processor

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestApplyEvents: what another queue's job does with event ids (the River baseline):
// the events' messages and statuses are written, each event is marked processed with
// one attempt, an event whose payload can never apply is dead without costing the
// others, and applying the same ids again changes nothing.
func TestApplyEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	t0 := time.Now()
	insertEvents(t, pool, sent("m-1", "+15552223333", t0), status("m-1", "read", t0), received("m-2", "hi", t0),
		`{"type":"message.received","data":{}}`) // no message id: permanent
	rows, _ := pool.Query(ctx, "SELECT id FROM inbound_events ORDER BY id")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ApplyEvents(ctx, pool, ids); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	err = pool.QueryRow(ctx, `
SELECT string_agg(state || '/' || attempts, ' ' ORDER BY id) || ' | ' ||
       (SELECT string_agg(provider_message_id || '/' || status, ' ' ORDER BY provider_message_id) FROM messages)
FROM inbound_events`).Scan(&got)
	if err != nil {
		t.Fatal(err)
	}
	if want := "processed/1 processed/1 processed/1 dead/1 | m-1/read m-2/received"; got != want {
		t.Errorf("after applying twice: %s, want %s", got, want)
	}
	var lastErr string
	pool.QueryRow(ctx, "SELECT last_error FROM inbound_events WHERE state = 'dead'").Scan(&lastErr)
	if lastErr == "" {
		t.Error("the dead event has no last_error")
	}
}
