package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestLeastPrivilegeRoles: with deploy/postgres/roles.sql applied, `inboxd migrate`
// runs as the owner, and `inboxd serve` runs as the runtime role (no CREATE, no DDL)
// with the reader role for the /v1 reads: webhooks are stored, processed, read back
// and replayed, while the runtime role cannot create a table or a database and the
// reader cannot write.
func TestLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	as := func(role, db string) string { return asRole(role, cluster.URL(db)) }
	migrateAsOwner(t, cluster, "inboxd")

	env := map[string]string{
		"DATABASE_URL": as("inboxd_runtime", "inboxd"), "INBOX_READ_DATABASE_URL": as("inboxd_reader", "inboxd"),
		"INBOX_MIGRATE": "false", "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_API_TOKENS": "read-token", "INBOX_ADMIN_TOKENS": "admin-token", "INBOX_RETENTION": "1s", "INBOX_DEV": "true",
	}
	// `inboxd check` with these settings reads what it checks with the runtime role's
	// rights: the schema's version, the server's room, the reader's database.
	var checked bytes.Buffer
	if err := run(context.Background(), []string{"check"}, func(k string) string { return env[k] }, &checked, &checked); err != nil ||
		!strings.Contains(checked.String(), "current (") || !strings.Contains(checked.String(), "read replica") {
		t.Errorf("check as inboxd_runtime: %v\n%s", err, &checked)
	}
	base, _ := startServe(t, env)
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-roles","channel":"+15550001111","contact":"+15552223333","text":"least privilege"}}`)
	if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-roles", body, time.Now())); status != 200 {
		t.Fatalf("webhook as inboxd_runtime: %d %s", status, b)
	}
	runtime, err := pgx.Connect(context.Background(), as("inboxd_runtime", "inboxd"))
	if err != nil {
		t.Fatal(err)
	}
	defer runtime.Close(context.Background())
	pgtest.Eventually(t, "the event is processed as inboxd_runtime", 15*time.Second, func() (bool, error) {
		var n int
		err := runtime.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&n)
		return n == 1, err
	})
	if got := apiMessages(t, base); len(got) != 1 {
		t.Errorf("the API (reading as inboxd_reader) shows %q, want the message", got)
	}
	admin(t, base, "POST", "/v1/events/1/replay")

	denied := func(who string, conn *pgx.Conn, sql string) {
		t.Helper()
		_, err := conn.Exec(context.Background(), sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s: %s = %v, want permission denied (42501)", who, sql, err)
		}
	}
	denied("inboxd_runtime", runtime, "CREATE TABLE sneaky (id int)")
	denied("inboxd_runtime", runtime, "CREATE DATABASE sneaky")
	denied("inboxd_runtime", runtime, "ALTER TABLE messages ADD COLUMN sneaky int")
	reader, err := pgx.Connect(context.Background(), as("inboxd_reader", "inboxd"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(context.Background())
	denied("inboxd_reader", reader, "DELETE FROM messages")
	denied("inboxd_reader", reader, "UPDATE inbound_events SET state = 'dead'")
}

// migrateAsOwner applies deploy/postgres/roles.sql to database db of cluster (which it
// creates, owned by inboxd_owner) and migrates it as the owner.
func migrateAsOwner(t *testing.T, cluster *pgtest.Cluster, db string) {
	t.Helper()
	if out, err := exec.Command("psql", "-X", "-q", "-v", "db="+db, "-f", "../../deploy/postgres/roles.sql", cluster.URL("postgres")).CombinedOutput(); err != nil {
		t.Fatalf("roles.sql: %v\n%s", err, out)
	}
	var out syncBuffer
	if err := run(context.Background(), []string{"migrate"}, func(k string) string {
		return map[string]string{"DATABASE_URL": asRole("inboxd_owner", cluster.URL(db))}[k]
	}, &out, &out); err != nil {
		t.Fatalf("migrate as inboxd_owner: %v\n%s", err, out.String())
	}
}

// asRole is url with its user replaced by role.
func asRole(role, url string) string {
	return strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1)
}
