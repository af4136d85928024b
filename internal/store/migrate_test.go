package store_test

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"inboxd/internal/pgtest"
	"inboxd/internal/store"
	"inboxd/migrations"
)

// migratedTo makes a database migrated up to migration n, and returns its URL, a
// connection to it (closed when the test ends) and the migrator on that connection.
func migratedTo(t *testing.T, n int32) (string, *pgx.Conn, *migrate.Migrator) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewEmptyDB(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	m, err := migrate.NewMigrator(ctx, conn, store.VersionTable)
	if err == nil {
		err = m.LoadMigrations(migrations.FS)
	}
	if err == nil {
		err = m.MigrateTo(ctx, n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return url, conn, m
}

// TestMigrationsNeverBlockIngest: upgrading a database that holds data while a
// transaction is writing to inbound_events does not stop other sessions from
// inserting: index builds on existing tables are concurrent, and the migration waits
// for the old transaction instead of queueing every insert behind its lock.
func TestMigrationsNeverBlockIngest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn, _ := migratedTo(t, 2) // the tables, before the indexes of 003

	// A writer is mid-transaction on inbound_events.
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	tx, err := writer.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'open', '{}')")
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := store.Migrate(ctx, url); done <- err }()
	waitForLockWait(t, conn, `%CREATE INDEX%`)

	// Meanwhile ingest goes on.
	probe, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close(ctx)
	_, err = probe.Exec(ctx, "SET statement_timeout = '2s'; INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', 'during', '{}')")
	if err != nil {
		t.Errorf("an insert while the migration waits: %v, want it to go through", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migration after the writer committed: %v", err)
	}
}

// waitForLockWait waits until a backend running a statement like pattern waits on a
// lock.
func waitForLockWait(t *testing.T, conn *pgx.Conn, pattern string) {
	t.Helper()
	pgtest.Eventually(t, "a statement like "+pattern+" waits on a lock", 20*time.Second, func() (bool, error) {
		var waiting bool
		err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE $1 AND wait_event_type = 'Lock')`, pattern).Scan(&waiting)
		return waiting, err
	})
}

// TestMigrationsFollowTheLockRules reads every migration: an index on a table the
// file did not create is built CONCURRENTLY in a migration that runs outside a
// transaction, and a file that takes a table lock (ALTER TABLE, or an index build)
// sets lock_timeout first.
func TestMigrationsFollowTheLockRules(t *testing.T) {
	createTable := regexp.MustCompile(`(?i)CREATE TABLE (\w+)`)
	createIndex := regexp.MustCompile(`(?i)CREATE (UNIQUE )?INDEX (CONCURRENTLY )?(\w+ )?ON (\w+)`)
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".sql") {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		up, _, _ := strings.Cut(string(b), "---- create above / drop below ----")
		created := map[string]bool{}
		for _, m := range createTable.FindAllStringSubmatch(up, -1) {
			created[m[1]] = true
		}
		locks := false
		for _, m := range createIndex.FindAllStringSubmatch(up, -1) {
			if created[m[4]] {
				continue
			}
			locks = true
			if m[2] == "" || !strings.Contains(up, "---- tern: disable-tx ----") {
				t.Errorf("%s: index %son existing table %s is not built CONCURRENTLY outside a transaction", path, m[3], m[4])
			}
		}
		if strings.Contains(strings.ToUpper(up), "ALTER TABLE") {
			locks = true
		}
		if locks && !strings.Contains(up, "lock_timeout") {
			t.Errorf("%s locks an existing table without setting lock_timeout", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSubscriptionsGetErasures: migration 021 adds contact.erased to the types of
// subscriptions made before it, once, sorted; one that had it is left as it was.
func TestSubscriptionsGetErasures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, conn, m := migratedTo(t, 20)
	if _, err := conn.Exec(ctx, `INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq) VALUES
('https://a.example.com', '{message.created,message.status_changed}', 'whsec_a', '0', 0),
('https://b.example.com', '{contact.erased,message.created}', 'whsec_b', '0', 0)`); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, 21); err != nil {
		t.Fatal(err)
	}
	var types []string
	if err := conn.QueryRow(ctx, `SELECT array_agg(array_to_string(types, ',') ORDER BY id) FROM subscriptions`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	if want := "[contact.erased,message.created,message.status_changed contact.erased,message.created]"; fmt.Sprint(types) != want {
		t.Errorf("types after migration 021: %v, want %s", types, want)
	}
}

// TestReadSchema: a check reads where a schema stands without changing it: every
// migration pending on an empty database (in the order Migrate applies them), some
// on one part way, none once migrated, and a version past this binary's as newer.
func TestReadSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	read := func(url string) store.Schema {
		t.Helper()
		pool, err := store.Open(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		s, err := store.ReadSchema(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	empty := pgtest.NewEmptyDB(t)
	before := read(empty)
	applied, err := store.Migrate(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}
	if before.Version != 0 || !slices.Equal(before.Pending, applied) || len(applied) != len(migrations.Names()) || before.Newer() {
		t.Errorf("an empty database: version %d, pending %v; want 0 and every migration, as Migrate applied them: %v", before.Version, before.Pending, applied)
	}
	if after := read(empty); after.Version != len(applied) || len(after.Pending) != 0 || after.Newer() {
		t.Errorf("a migrated database: %+v, want version %d and nothing pending", after, len(applied))
	}
	url, conn, _ := migratedTo(t, 3)
	if s := read(url); s.Version != 3 || !slices.Equal(s.Pending, applied[3:]) {
		t.Errorf("a database at migration 3: %+v, want the rest pending", s)
	}
	if _, err := conn.Exec(ctx, "UPDATE "+store.VersionTable+" SET version = $1", len(applied)+1); err != nil {
		t.Fatal(err)
	}
	if s := read(url); !s.Newer() || len(s.Pending) != 0 {
		t.Errorf("a database at a migration this binary does not have: %+v, want it newer and nothing pending", s)
	}
	// Nothing was written: an empty database stays without tern's version table.
	fresh := pgtest.NewEmptyDB(t)
	read(fresh)
	pool, err := store.Open(ctx, fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", store.VersionTable).Scan(&exists); err != nil || exists {
		t.Errorf("ReadSchema made %s (%v)", store.VersionTable, err)
	}
}
