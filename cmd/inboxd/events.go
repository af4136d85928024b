package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"inboxd/internal/processor"
)

// eventsCmd lists events, newest first (`inboxd events --state dead`), or requeues them
// (`inboxd events replay …`).
func eventsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "replay" {
		return replayCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	var f processor.EventFilter
	var asJSON bool
	fs := cliFlags("events", "Lists events, newest first, without payloads. `inboxd events replay --help` tells how to requeue them.", stderr)
	fs.StringVar(&f.State, "state", "", "only events in this state: pending, processing, processed or dead")
	fs.StringVar(&f.Provider, "provider", "", "only events of this provider (generic, twilio, meta)")
	fs.IntVar(&f.Limit, "limit", 20, "how many, at most")
	fs.Int64Var(&f.Before, "before", 0, "only events with an id below this one (the next page)")
	fs.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.Validate(); err != nil { // before connecting: a typo is not a database problem
		return usageError{err}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	events, err := processor.ListEvents(ctx, pool, f)
	if err != nil {
		return dbAdvice(err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tprovider\texternal_id\tstate\tattempts\treceived_at\tlast_error")
	for _, e := range events {
		lastErr := ""
		if e.LastError != nil {
			lastErr = *e.LastError
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Provider, e.ExternalID, e.State, e.Attempts,
			e.ReceivedAt.UTC().Format(time.RFC3339), lastErr)
	}
	return tw.Flush()
}

// replayCmd requeues events: the ids given, or up to --limit in --state.
func replayCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var state, provider string
	var limit int
	fs := cliFlags("events replay", "Requeues dead or processed events with a fresh set of attempts:\n"+
		"  inboxd events replay ID…                    these events\n"+
		"  inboxd events replay --state dead [--provider P] [--limit N]\n"+
		"Events pending or processing are left alone; replaying twice changes nothing more.", stderr)
	fs.StringVar(&state, "state", "", "replay events in this state: dead or processed")
	fs.StringVar(&provider, "provider", "", "with --state: only this provider's")
	fs.IntVar(&limit, "limit", 1000, "with --state: at most this many, oldest first")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var ids []int64
	for _, a := range fs.Args() {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id < 1 {
			return usageError{fmt.Errorf("event id %q is not a positive whole number", a)}
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) > 0 && state != "":
		return usageError{errors.New("give event ids or --state, not both")}
	case len(ids) == 0 && state != "dead" && state != "processed":
		return usageError{errors.New("give event ids, or --state dead (or processed)")}
	case limit < 1:
		return usageError{fmt.Errorf("--limit must be at least 1, got %d", limit)}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	var n int64
	if len(ids) > 0 {
		n, err = processor.Requeue(ctx, pool, ids)
	} else {
		n, err = processor.RequeueState(ctx, pool, state, provider, limit)
	}
	if err != nil {
		return dbAdvice(err)
	}
	fmt.Fprintf(stdout, "replayed %d events\n", n)
	return nil
}
