// Package pgtest gives each test its own PostgreSQL database, cloned from a template
// that is migrated once per test binary, so test packages run in parallel and no test
// sees another's rows. It is for tests only. A package that uses it runs its tests
// through Main, which drops the template at the end: a test run leaves the server as
// it found it.
//
// The server is INBOXD_TEST_DATABASE_URL (default: the local trust-auth server as the
// postgres role). A server that cannot be reached fails the test loudly: a test that
// skips when its database is missing proves nothing.
package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/store"
	"inboxd/migrations"
)

const defaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	mainRunning  bool
	templateOnce sync.Once
	templateName string
	templateErr  error
	counter      atomic.Int64
)

// Main runs the package's tests (call it from TestMain: os.Exit(pgtest.Main(m))) and
// then drops the template database they cloned from.
func Main(m *testing.M) int {
	mainRunning = true
	code := m.Run()
	if templateName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropDatabase(ctx, templateName); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: drop template %s: %v\n", templateName, err)
			return max(code, 1)
		}
	}
	return code
}

// ServerURL is the connection string of the test server's maintenance database.
func ServerURL() string {
	if u := os.Getenv("INBOXD_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultURL
}

// NewDB creates a fresh, migrated database for t, drops it when t ends, and returns
// its connection string.
func NewDB(t testing.TB) string {
	t.Helper()
	if !mainRunning {
		t.Fatal("pgtest: run the package's tests through pgtest.Main (func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }), so that its template database is dropped at the end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		t.Fatalf("pgtest: prepare template database on %s: %v", ServerURL(), templateErr)
	}
	name := fmt.Sprintf("inboxd_t_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, counter.Add(1))
	admin := connect(t, ctx)
	defer admin.Close(ctx)
	create := fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName)
	if _, err := admin.Exec(ctx, create); err != nil {
		t.Fatalf("pgtest: %s: %v", create, err)
	}
	t.Cleanup(func() { DropDatabase(t, name) })
	return DatabaseURL(name)
}

// NewPool is NewDB plus a pool on it, closed when t ends.
func NewPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	url := NewDB(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool, url
}

func connect(t testing.TB, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("pgtest: connect to test server %s (set INBOXD_TEST_DATABASE_URL, or start the local server): %v", ServerURL(), err)
	}
	return conn
}

// NewEmptyDB creates an empty database (no migrations) for t and drops it when t
// ends: for tests of migrating itself.
func NewEmptyDB(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("inboxd_e_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, counter.Add(1))
	admin := connect(t, ctx)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create %s: %v", name, err)
	}
	t.Cleanup(func() { DropDatabase(t, name) })
	return DatabaseURL(name)
}

// DropDatabase drops database name on the test server (if it exists), failing t if it
// cannot: a test run leaves the server as it found it.
func DropDatabase(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dropDatabase(ctx, name); err != nil {
		t.Errorf("pgtest: drop %s: %v", name, err)
	}
}

func dropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	return err
}

// DatabaseExists reports whether database name exists on the test server.
func DatabaseExists(t testing.TB, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connect(t, ctx)
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatalf("pgtest: look for database %s: %v", name, err)
	}
	return exists
}

// DatabaseURL is the connection string of database name on the test server.
func DatabaseURL(name string) string {
	u, err := url.Parse(ServerURL())
	if err != nil {
		return ServerURL()
	}
	u.Path = "/" + name
	return u.String()
}

// ensureTemplate creates this test binary's template: a database migrated to the
// current schema, named after the migrations' hash and the process.
func ensureTemplate(ctx context.Context) (string, error) {
	hash, err := schemaHash()
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("inboxd_tmpl_%s_%d", hash, os.Getpid())
	if err := dropDatabase(ctx, name); err != nil { // a crashed run's, if the pid came round
		return "", err
	}
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	if _, err := store.Migrate(ctx, DatabaseURL(name)); err != nil {
		dropDatabase(context.WithoutCancel(ctx), name)
		return "", fmt.Errorf("migrate template: %w", err)
	}
	return name, nil
}

func schemaHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}
