package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"inboxd/internal/store"
)

// migrateCmd creates the database if needed, applies pending migrations and says which.
// It uses the direct connection (INBOX_LISTEN_DATABASE_URL when DATABASE_URL goes
// through a pooler): tern holds a session-level advisory lock while it migrates.
func migrateCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := store.EnsureDatabase(ctx, cfg.ListenURL); err != nil {
		return dbAdvice(err)
	}
	applied, err := store.Migrate(ctx, cfg.ListenURL)
	if errors.Is(err, store.ErrNewerSchema) {
		fmt.Fprintf(stdout, "nothing to apply: %v\n", err)
		return nil
	}
	if len(applied) > 0 {
		fmt.Fprintf(stdout, "applied %s\n", strings.Join(applied, ", "))
	}
	if err != nil {
		return dbAdvice(err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "nothing to apply: the database is up to date")
	}
	return nil
}
