package bench

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/store"
)

// CreateDatabase drops and recreates database name on the server, migrates it, and
// opens a pool with room for the ceiling's clients.
func CreateDatabase(ctx context.Context, server, name string) (string, *pgxpool.Pool, error) {
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		return "", nil, fmt.Errorf("parse --database-url: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w", store.Redact(server), err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return "", nil, fmt.Errorf("%s: %w", sql, err)
		}
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", nil, fmt.Errorf("--database-url must be a postgres:// URL: %w", err)
	}
	u.Path = "/" + name
	dbURL := u.String()
	if _, err := store.Migrate(ctx, dbURL); err != nil {
		return "", nil, err
	}
	// Room for the ceiling's clients (pgxpool's default is max(4, CPUs) connections).
	pool, err := store.Open(ctx, dbURL, func(c *pgxpool.Config) { c.MaxConns = 128 })
	return dbURL, pool, err
}

// Reset empties inboxd's tables between runs, and River's jobs when River's tables
// are there, and analyzes them all: each system's planner starts from the same
// statistics (an empty table) rather than from whatever the previous run left, which
// matters to River's fetch (inboxd's statements do not depend on statistics).
//
// The system under test is already running, and its first sweeps may lock the same
// tables in another order than the TRUNCATE (seen: the outbound deliveries' claim
// held changes and waited for messages, which the TRUNCATE held while it waited for
// changes): Postgres then cancels one of the two as a deadlock. The TRUNCATE changed
// nothing when it is the one cancelled, so it is tried again, as after any error
// store.Transient calls transient.
func Reset(ctx context.Context, pool *pgxpool.Pool) error {
	var err error
	for range 5 {
		if err = reset(ctx, pool); !store.Transient(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("empty the bench database: %w", err)
	}
	return nil
}

func reset(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, "TRUNCATE inbound_events, conversations, messages, pending_statuses, changes RESTART IDENTITY CASCADE")
	if err == nil {
		_, err = pool.Exec(ctx, `DO $$ BEGIN IF to_regclass('river_job') IS NOT NULL THEN TRUNCATE river_job; ANALYZE river_job; END IF; END $$`)
	}
	if err == nil {
		_, err = pool.Exec(ctx, "ANALYZE inbound_events, conversations, messages, pending_statuses, changes")
	}
	return err
}

// Ramp runs step at each rate until one misses the SLO (p99 end to end under
// sloMillis, no errors, the rate achieved), and returns every step's result.
func Ramp(rates []int, sloMillis float64, step func(rate int) (Result, error)) ([]Result, error) {
	var results []Result
	for _, rate := range rates {
		r, err := step(rate)
		if err != nil {
			return results, err
		}
		results = append(results, r)
		if len(rates) > 1 && !Passes(r, sloMillis) {
			break
		}
	}
	return results, nil
}
