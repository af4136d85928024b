package bench

import (
	"context"
	"testing"
	"time"

	"inboxd/internal/pgtest"
)

// TestResetAfterDeadlock: a session that locks the reset's tables in the other order
// (as the server under test's claim of outbound deliveries did: changes, then
// messages) deadlocks with the reset's TRUNCATE; Postgres cancels the TRUNCATE, which
// waited first, and Reset tries again once the other session is done, leaving the
// tables empty.
func TestResetAfterDeadlock(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'e-1', '{}')`); err != nil {
		t.Fatal(err)
	}
	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	// The other session waits longer before it checks for a deadlock, so that the
	// TRUNCATE is the one cancelled.
	if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '1min'; LOCK TABLE changes IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Reset(ctx, pool) }()
	pgtest.Eventually(t, "the TRUNCATE waits for changes", time.Minute, func() (bool, error) {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'changes'::regclass AND NOT granted)`).Scan(&waiting)
		return waiting, err
	})
	if _, err := other.Exec(ctx, `SELECT count(*) FROM messages`); err != nil {
		t.Fatalf("the other session: %v", err)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Reset after a deadlock: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("events after Reset: %d, %v; want 0", n, err)
	}
}
