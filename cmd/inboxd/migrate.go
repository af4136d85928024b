package main

import (
	"context"
	"fmt"
	"io"

	"inboxd/internal/store"
)

// migrateCmd creates the database if needed and applies pending migrations.
func migrateCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return dbAdvice(err)
	}
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return dbAdvice(err)
	}
	fmt.Fprintln(stdout, "migrations applied")
	return nil
}
