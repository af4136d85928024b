package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Eventually polls cond until it holds, and fails the test if it does not within
// the given time (a deadline, never a bare sleep: on a busy machine a condition takes
// as long as it takes, up to a wide bound). An error from cond does not stop the wait
// (a database restarting, say), but the last one is reported if time runs out.
func Eventually(t testing.TB, what string, within time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("%s: not true after %s (last error: %v)", what, within, err)
			}
			t.Fatalf("%s: not true after %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitLocked waits until n backends of pool's database wait for a lock (a row's, a
// key's, an advisory one): a test that holds one so that transactions line up behind
// it lets it go then.
func WaitLocked(t testing.TB, pool *pgxpool.Pool, n int) {
	t.Helper()
	Eventually(t, fmt.Sprintf("%d waiting for a lock", n), time.Minute, func() (bool, error) {
		var waiting int
		err := pool.QueryRow(context.Background(), `
SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return waiting == n, err
	})
}

// LineUp holds a lock (hold, in a transaction of its own), starts each of runs in
// turn, each once the one before waits for a lock, and lets the lock go when all of
// them wait: by rolling back, or by committing when commit is set (what the holder did
// is then what the runs find). It fails the test with any run's error. A test of a
// lock order lines up two transactions that take the same locks in opposite orders:
// if they are not taken in one order after all, one of them ends in a deadlock.
func LineUp(t testing.TB, pool *pgxpool.Pool, hold func(pgx.Tx) error, commit bool, runs ...func() error) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := hold(tx); err != nil {
		t.Fatalf("hold the lock: %v", err)
	}
	errs := make(chan error, len(runs))
	for i, run := range runs {
		go func() { errs <- run() }()
		WaitLocked(t, pool, i+1)
	}
	if commit {
		err = tx.Commit(ctx)
	} else {
		err = tx.Rollback(ctx)
	}
	if err != nil {
		t.Fatalf("let the lock go: %v", err)
	}
	for range runs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
