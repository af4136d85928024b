// Package store opens inboxd's database: it creates the database named in the
// connection string when it is missing, applies the embedded migrations, and builds the
// connection pool. It owns no tables; the migrations say which package owns which.
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"inboxd/migrations"
)

// VersionTable is where tern records the applied migrations (tern.conf names it too).
const VersionTable = "public.schema_version"

// ErrUnreachable reports that no Postgres server answered at the configured address.
var ErrUnreachable = errors.New("postgres unreachable")

// EnsureDatabase creates the database named in url if it does not exist, connecting to
// the server's "postgres" database to do so.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.DialFunc = Dialer().DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	if !IsMissingDatabase(err) {
		return connectErr(cfg, err)
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err = pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return connectErr(admin, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: a racing start created it
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", cfg.Database, err)
	}
	return nil
}

// ErrNewerSchema: the database's schema is at a version this binary does not know,
// applied by a newer inboxd. Migrations are additive (docs/operations.md, Upgrades),
// so this binary runs on it: a process of the previous version restarting during a
// rolling upgrade, or a binary rolled back after its migrations, must still start.
// Migrate returns it wrapped, having changed nothing; callers warn and go on.
var ErrNewerSchema = errors.New("the database schema is newer than this binary")

// Migrate applies every pending embedded migration and returns the names of those it
// applied (none when the schema was current). tern holds an advisory lock while it
// runs, so several processes starting at once apply each migration once.
func Migrate(ctx context.Context, url string) ([]string, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.DialFunc = Dialer().DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectErr(cfg, err)
	}
	defer conn.Close(ctx)
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	// tern refuses a version beyond its migrations. The version only grows, so one
	// read before tern takes its lock is enough.
	if v, err := m.GetCurrentVersion(ctx); err != nil {
		return nil, fmt.Errorf("read the schema version: %w", err)
	} else if known := int32(len(m.Migrations)); v > known {
		return nil, fmt.Errorf("%w: it is at migration %d, this binary knows %d; nothing applied", ErrNewerSchema, v, known)
	}
	var applied []string
	m.OnStart = func(_ int32, name, _, _ string) { applied = append(applied, name) }
	if err := m.Migrate(ctx); err != nil {
		return applied[:max(len(applied)-1, 0)], fmt.Errorf("apply migrations: %w", err)
	}
	return applied, nil
}

// Schema is where a database's schema stands against this binary's migrations.
type Schema struct {
	Version int      // the migrations applied to the database
	Pending []string // those of this binary's not applied yet, in order
}

// Newer says the database is at a migration this binary does not have
// (ErrNewerSchema).
func (s Schema) Newer() bool { return s.Version > len(migrations.Names()) }

// ReadSchema reads where the schema of pool's database stands, changing nothing
// (`inboxd check`): tern's Migrator would make its version table where it is
// missing, which a read-only role cannot and a check should not.
func ReadSchema(ctx context.Context, pool *pgxpool.Pool) (Schema, error) {
	var s Schema
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, VersionTable).Scan(&exists); err != nil {
		return Schema{}, fmt.Errorf("read the schema version: %w", err)
	}
	if exists {
		if err := pool.QueryRow(ctx, `SELECT version FROM `+VersionTable).Scan(&s.Version); err != nil {
			return Schema{}, fmt.Errorf("read the schema version: %w", err)
		}
	}
	names := migrations.Names()
	s.Pending = names[min(s.Version, len(names)):]
	return s, nil
}

// Open connects a pool to url, applying configure (may be nil) to its config, and pings
// it so that an unreachable server is reported now rather than at the first request.
//
// A connection that meets a read-only server (IsReadOnly: a failover left it on the
// old primary, now a standby) closes itself, so that the pool's next connection finds
// the new primary. Every pool of the service gets this, whichever statement meets the
// error first; ResetOnReadOnly drops a whole pool at once where a write path wants it.
func Open(ctx context.Context, url string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.DialFunc = Dialer().DialContext
	keep := cfg.ConnConfig.OnPgError // closes the connection on FATAL errors
	cfg.ConnConfig.OnPgError = func(c *pgconn.PgConn, e *pgconn.PgError) bool {
		return e.Code != readOnly && (keep == nil || keep(c, e))
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, connectErr(cfg.ConnConfig, err)
	}
	return pool, nil
}

// SetLocal returns one statement that sets each (name, value) pair of settings for
// the rest of the current transaction, explicit or implicit (a pipelined batch, which
// commits at its end). It calls set_config(name, value, true), the function form of
// SET LOCAL: SET LOCAL works in an implicit transaction too, but Postgres answers it
// with a WARNING there ("SET LOCAL can only be used in transaction blocks") and
// writes that to the server log, a line per setting per transaction. Names and values
// are the code's own, never input.
func SetLocal(pairs ...string) string {
	calls := make([]string, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		calls = append(calls, fmt.Sprintf("set_config('%s', '%s', true)", pairs[i], pairs[i+1]))
	}
	return "SELECT " + strings.Join(calls, ", ")
}

// IsUnmigrated reports whether err says a table or view of inboxd does not exist: the
// database was never migrated.
func IsUnmigrated(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01" // undefined_table
}

// IsMissingDatabase reports whether err says the database does not exist.
func IsMissingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000" // invalid_catalog_name
}

// connectErr turns a connection failure into one line that says where inboxd looked; a
// failure to reach the server at all wraps ErrUnreachable so that main can add advice.
func connectErr(cfg *pgx.ConnConfig, err error) error {
	where := fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr):
		// pgx lists every address it tried; the first dial error says it all.
		return fmt.Errorf("connect to %s: %w (%v)", where, ErrUnreachable, opErr)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("connect to %s: %w (timed out)", where, ErrUnreachable)
	}
	return fmt.Errorf("connect to %s: %w", where, err)
}
