package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
	"inboxd/internal/store"
)

// TestWatchStatements: a pool made with WatchStatements reports, once, the error a
// transaction-mode pooler gives to a lost prepared statement (SQLSTATE 26000, here
// from Postgres itself), and is Misconfigured from then on; other errors do not count.
func TestWatchStatements(t *testing.T) {
	t.Parallel()
	pool, told := watchedPool(t)
	ctx := context.Background()
	pool.Exec(ctx, "SELECT * FROM no_such_table") // another error
	if err := store.Misconfigured(pool); err != nil || len(*told) != 0 {
		t.Fatalf("after an unrelated error: %v (told %v), want nothing", err, *told)
	}
	for range 3 {
		pool.Exec(ctx, "EXECUTE stmtcache_gone") // 26000: prepared statement does not exist
	}
	if err := store.Misconfigured(pool); !errors.Is(err, store.ErrPoolerMisconfigured) {
		t.Errorf("after lost prepared statements: %v, want ErrPoolerMisconfigured", err)
	}
	if len(*told) != 1 {
		t.Errorf("told %d times, want once for the spell", len(*told))
	}
}

// TestWatchStatementsDuplicate: the other error a pooler causes, a statement
// prepared again on a server connection that already has it (SQLSTATE 42P05), counts too.
func TestWatchStatementsDuplicate(t *testing.T) {
	t.Parallel()
	pool, told := watchedPool(t)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for range 2 {
		conn.Exec(ctx, "PREPARE twice AS SELECT 1") // the second: 42P05
	}
	if err := store.Misconfigured(pool); !errors.Is(err, store.ErrPoolerMisconfigured) || len(*told) != 1 {
		t.Errorf("after a duplicate prepared statement: %v (told %d times), want ErrPoolerMisconfigured, told once", err, len(*told))
	}
}

// watchedPool opens a pool on a database of its own with WatchStatements, and
// returns it with the errors it was told of.
func watchedPool(t *testing.T) (*pgxpool.Pool, *[]error) {
	t.Helper()
	var told []error
	pool, err := store.Open(context.Background(), pgtest.NewDB(t), func(c *pgxpool.Config) {
		store.WatchStatements(c, func(err error) { told = append(told, err) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, &told
}

// TestReadOnlyConnectionCloses: a connection that meets a read-only server (as one
// left on the old primary after a failover does) closes itself: the pool's next
// statement runs on a new connection, which would find the new primary.
func TestReadOnlyConnectionCloses(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	ctx := context.Background()
	pool, err := store.Open(ctx, url, func(c *pgxpool.Config) { c.MaxConns = 1 })
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pid := func() (p int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := pid()
	if _, err := pool.Exec(ctx, `SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TEMP TABLE t (i int)`); !store.IsReadOnly(err) {
		t.Fatalf("a write on a read-only session: %v, want a read-only error", err)
	}
	if after := pid(); after == before {
		t.Errorf("the statement after a read-only error ran on the same connection (backend %d), want a new one", after)
	}
}
