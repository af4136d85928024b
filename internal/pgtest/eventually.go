package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

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
