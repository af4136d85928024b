package pgtest

import (
	"slices"
	"sync"

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
