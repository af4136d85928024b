package store

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrPoolerMisconfigured: statements fail because a transaction-mode pooler between
// inboxd and Postgres does not keep the named prepared statements pgx makes by
// default. Everything still works, slowly and with errors and retries, which is why it
// must be said loudly.
var ErrPoolerMisconfigured = errors.New("prepared statements are being lost: DATABASE_URL goes through a transaction-mode pooler (PgBouncer) without default_query_exec_mode; add default_query_exec_mode=exec to it (docs/deployment.md)")

// poolerWindow is how long after the last such error the pool is reported
// misconfigured.
const poolerWindow = time.Minute

// statementTracer watches every query of a pool for the errors a transaction-mode
// pooler gives to named prepared statements: 26000 (prepared statement "…" does not
// exist: it was prepared on another server connection) and 42P05 (it exists already).
type statementTracer struct {
	lastSeen atomic.Int64 // unix nanoseconds of the last one, 0: never
	onFirst  func(error)  // told once per window (a log line)
}

func (t *statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (t *statementTracer) TraceQueryEnd(_ context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	var pgErr *pgconn.PgError
	if !errors.As(data.Err, &pgErr) || (pgErr.Code != "26000" && pgErr.Code != "42P05") {
		return
	}
	now := time.Now().UnixNano()
	if prev := t.lastSeen.Swap(now); now-prev > int64(poolerWindow) && t.onFirst != nil {
		t.onFirst(data.Err)
	}
}

// WatchStatements makes the pool's connections report lost prepared statements:
// onFirst is called with the first error of each spell (log it, naming the fix), and
// Misconfigured reports them until a minute has passed without one.
func WatchStatements(cfg *pgxpool.Config, onFirst func(error)) {
	cfg.ConnConfig.Tracer = &statementTracer{onFirst: onFirst}
}

// Misconfigured returns ErrPoolerMisconfigured while pool, made with WatchStatements,
// has lost prepared statements within the last minute; else nil.
func Misconfigured(pool *pgxpool.Pool) error {
	t, ok := pool.Config().ConnConfig.Tracer.(*statementTracer)
	if !ok {
		return nil
	}
	if last := t.lastSeen.Load(); last != 0 && time.Since(time.Unix(0, last)) < poolerWindow {
		return ErrPoolerMisconfigured
	}
	return nil
}
