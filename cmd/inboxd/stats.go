package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/store"
)

// statsCmd prints inbox_queue_stats: how many events are in each state, and how old
// the oldest is.
func statsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	pool, err := cliPool(ctx, "stats", args, getenv, stderr, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT state, count, COALESCE(extract(epoch FROM oldest_age), 0) FROM inbox_queue_stats ORDER BY state`)
	if err != nil {
		return fmt.Errorf("read inbox_queue_stats: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "state\tcount\toldest\t")
	var state string
	var count int64
	var age float64
	_, err = pgx.ForEachRow(rows, []any{&state, &count, &age}, func() error {
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", state, count, time.Duration(age*float64(time.Second)).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		return fmt.Errorf("read inbox_queue_stats: %w", err)
	}
	return tw.Flush()
}

// eventsCmd lists recent events, newest first, optionally by state and provider.
func eventsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var state, provider string
	var limit int
	pool, err := cliPool(ctx, "events", args, getenv, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&state, "state", "", "only events in this state (pending, processing, processed, dead)")
		fs.StringVar(&provider, "provider", "", "only events of this provider")
		fs.IntVar(&limit, "limit", 20, "how many")
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `
SELECT id, provider, external_id, state, attempts, received_at, COALESCE(last_error, '')
FROM inbound_events
WHERE ($1 = '' OR state = $1) AND ($2 = '' OR provider = $2)
ORDER BY id DESC LIMIT $3`, state, provider, limit)
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tprovider\texternal_id\tstate\tattempts\treceived_at\tlast_error")
	var id int64
	var prov, ext, st, lastErr string
	var attempts int
	var received time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &prov, &ext, &st, &attempts, &received, &lastErr}, func() error {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", id, prov, ext, st, attempts, received.UTC().Format(time.RFC3339), lastErr)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	return tw.Flush()
}

// cliPool parses a read-only command's flags (DATABASE_URL plus extra) and connects.
func cliPool(ctx context.Context, name string, args []string, getenv func(string) string, stderr io.Writer, extra func(*flag.FlagSet)) (*pgxpool.Pool, error) {
	fs := flag.NewFlagSet("inboxd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The default is described, not shown: DATABASE_URL may hold a password.
	url := fs.String("database-url", "", "Postgres connection string (default: DATABASE_URL, else "+defaultDatabaseURL+")")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *url == "" {
		*url = or(getenv("DATABASE_URL"), defaultDatabaseURL)
	}
	pool, err := store.Open(ctx, *url, nil)
	if err != nil {
		return nil, dbAdvice(err)
	}
	return pool, nil
}
