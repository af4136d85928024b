package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/pgtest"
	"inboxd/migrations"
)

// TestCheckCommand: `inboxd check` says what serve would start with and starts
// nothing. Exit 0 when serve would start and work (a database or migrations serve
// makes at start included), 1 naming each failed check (an unreachable database,
// migrations serve would not apply), 2 for a setting serve refuses; nothing is
// created on the way.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	migrated := pgtest.NewDB(t)
	empty := pgtest.NewEmptyDB(t)
	missing := fmt.Sprintf("inboxd_check_missing_%d_%d", os.Getpid(), time.Now().UnixNano())
	missingURL := pgtest.DatabaseURL(missing)
	unreachable := "postgres://postgres:hunter2@127.0.0.1:1/inboxd?sslmode=disable"
	all := len(migrations.Names())
	limit := maxConnections(t, migrated)
	for _, c := range []struct {
		name   string
		env    map[string]string
		failed []string // the checks that fail; nil: exit 0
		want   []string
	}{
		{"ready", map[string]string{"DATABASE_URL": migrated, "INBOX_GENERIC_SECRETS": testSecret, "INBOX_DEV": "true", "INBOX_API_TOKENS": "a-read-token"},
			nil, []string{"settings     valid", "providers    generic; not configured: twilio (set INBOX_TWILIO_AUTH_TOKEN", "tokens       1 API, 0 admin",
				"reachable, PostgreSQL ", fmt.Sprintf("schema       current (%d migrations)", all), "change feed  its transaction ids are this server's", "inboxd serve would start"}},
		{"twilio, and a loopback public URL", map[string]string{"DATABASE_URL": migrated, "INBOX_TWILIO_AUTH_TOKEN": "a-token", "INBOX_PUBLIC_URL": "http://127.0.0.1:8080"},
			nil, []string{"public URL  WARNING: http://127.0.0.1:8080 is a loopback address, and twilio signs the URL it calls", "Set INBOX_PUBLIC_URL to the URL twilio is given"}},
		{"no provider, no token", map[string]string{"DATABASE_URL": migrated},
			nil, []string{"none: every webhook would answer 404", "the API and the console would refuse everyone", "connections  this process may open "}},
		{"more workers than the server has connections", map[string]string{"DATABASE_URL": migrated, "INBOX_WORKERS": strconv.Itoa(limit)},
			nil, []string{"connections  WARNING: this process may open ", "lower INBOX_WORKERS"}},
		{"migrations serve applies", map[string]string{"DATABASE_URL": empty},
			nil, []string{fmt.Sprintf("%d migrations to apply, which serve applies at start: %s to %s", all, migrations.Names()[0], migrations.Names()[all-1])}},
		{"migrations serve does not apply", map[string]string{"DATABASE_URL": empty, "INBOX_MIGRATE": "false"},
			[]string{"schema"}, []string{"schema     FAILED: ", "INBOX_MIGRATE=false: apply them with `inboxd migrate`"}},
		{"a database serve creates", map[string]string{"DATABASE_URL": missingURL},
			nil, []string{"does not exist yet: serve creates it at start"}},
		{"a database serve does not create", map[string]string{"DATABASE_URL": missingURL, "INBOX_MIGRATE": "false"},
			[]string{"database"}, []string{"does not exist, and INBOX_MIGRATE=false: create it and its tables with `inboxd migrate`"}},
		{"unreachable", map[string]string{"DATABASE_URL": unreachable},
			[]string{"database"}, []string{"database   FAILED: connect to postgres@127.0.0.1:1/inboxd"}},
		{"unreachable listen connection", map[string]string{"DATABASE_URL": migrated, "INBOX_LISTEN_DATABASE_URL": unreachable},
			[]string{"listen, migrate"}, []string{"change feed", "listen, migrate  FAILED: connect to postgres@127.0.0.1:1/inboxd"}},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"check"}, func(k string) string { return c.env[k] }, &out, &errOut)
		var usage usageError
		switch {
		case errors.As(err, &usage):
			t.Errorf("%s: a usage error: %v", c.name, err)
		case c.failed == nil && err != nil:
			t.Errorf("%s: %v, want exit 0:\n%s", c.name, err, &out)
		case c.failed != nil && (err == nil || !strings.HasSuffix(err.Error(), "failed: "+strings.Join(c.failed, "; "))):
			t.Errorf("%s: %v, want the checks %v named as failed:\n%s", c.name, err, c.failed, &out)
		}
		said := spaces.ReplaceAllString(out.String(), " ") // the columns' width changes with the lines shown
		for _, want := range c.want {
			if !strings.Contains(said, spaces.ReplaceAllString(want, " ")) {
				t.Errorf("%s: the check does not say %q:\n%s", c.name, want, &out)
			}
		}
		if strings.Contains(out.String()+errOut.String(), "hunter2") || (c.failed != nil && strings.Contains(out.String(), "would start")) {
			t.Errorf("%s: a password shown, or serve said to start after a failed check:\n%s%s", c.name, &out, &errOut)
		}
	}
	// The public URL Twilio is given draws no warning; nor does a loopback one for a
	// provider that does not sign the URL.
	for _, env := range []map[string]string{
		{"DATABASE_URL": migrated, "INBOX_TWILIO_AUTH_TOKEN": "a-token", "INBOX_PUBLIC_URL": "https://inbox.example.com"},
		{"DATABASE_URL": migrated, "INBOX_GENERIC_SECRETS": testSecret, "INBOX_DEV": "true"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"check"}, func(k string) string { return env[k] }, &out, &out); err != nil || strings.Contains(out.String(), "WARNING") {
			t.Errorf("check with %v: %v, a warning:\n%s", env, err, &out)
		}
	}
	if pgtest.DatabaseExists(t, missing) {
		pgtest.DropDatabase(t, missing)
		t.Errorf("check created database %s", missing)
	}
	// A setting serve refuses is exit 2, every one named, before any database.
	var out bytes.Buffer
	err := run(context.Background(), []string{"check"}, func(k string) string {
		return map[string]string{"DATABASE_URL": unreachable, "INBOX_WORKERS": "0", "INBOX_ADDR": "x"}[k]
	}, &out, &out)
	var usage usageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "INBOX_WORKERS") || !strings.Contains(err.Error(), "INBOX_ADDR") || strings.Contains(out.String(), "database") {
		t.Errorf("check with two bad settings: %v %s, want exit 2 naming both, before any database", err, &out)
	}
}

// spaces are the runs of spaces a table pads its columns with.
var spaces = regexp.MustCompile(` {2,}`)

// maxConnections is the max_connections of the server of the database at url.
func maxConnections(t *testing.T, url string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var limit int
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('max_connections')::int`).Scan(&limit); err != nil {
		t.Fatal(err)
	}
	return limit
}

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true, "inboxd.localhost": true,
		"inbox.example.com": false, "10.0.0.1": false, "localhost.example.com": false, "": false,
	} {
		if got := loopback(host); got != want {
			t.Errorf("loopback(%q) = %v, want %v", host, got, want)
		}
	}
}
