package pgtest

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CollectNotices makes every connection of a pool built from cfg record the notices
// and warnings the server sends it ("WARNING: …"), and returns a function that reads
// those recorded so far. A test that says "draws no notice" checks it is empty.
func CollectNotices(cfg *pgxpool.Config) func() []string {
	var mu sync.Mutex
	var notices []string
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n.Severity+": "+n.Message)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(notices)
	}
}

// Listen is a connection to url listening on channel, closed when t ends: what a DBA's
// `LISTEN inbound_events` in psql sees, a test reads with its WaitForNotification.
func Listen(t testing.TB, url, channel string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return conn
}
