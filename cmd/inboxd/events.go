package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"inboxd/internal/processor"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
)

// eventsCmd lists events, newest first (`inboxd events --state dead`), or requeues them
// (`inboxd events replay …`).
func eventsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "replay" {
		return replayCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "show" {
		return showCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	var f readmodel.EventFilter
	var asJSON bool
	fs := cliFlags("events", "Lists events, newest first, without payloads. `inboxd events show ID` shows one in full;\n"+
		"`inboxd events replay --help` tells how to requeue them.", stderr)
	fs.StringVar(&f.State, "state", "", "only events in this state: "+strings.Join(processor.States, ", "))
	fs.StringVar(&f.Provider, "provider", "", "only events of this provider: "+strings.Join(registry.Names(), ", "))
	fs.StringVar(&f.ExternalID, "external-id", "", "only the event with the provider's id of this delivery (a MessageSid, a webhook-id); needs --provider")
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
	limit := f.Limit
	f.Limit++ // one more, to know whether there is a next page
	events, err := readmodel.ListEvents(ctx, pool, f)
	if err != nil {
		return dbAdvice(err)
	}
	events, more := firstPage(events, limit)
	if more {
		fmt.Fprintf(stderr, "more events: the next page is --before %d (with the same filters)\n", events[limit-1].ID)
	}
	if asJSON {
		return printLines(stdout, events)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tprovider\texternal_id\tstate\tattempts\treceived_at\tlast_error")
	for _, e := range events {
		lastErr := ""
		if e.LastError != nil {
			lastErr = *e.LastError
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Provider, printable(e.ExternalID), e.State, e.Attempts,
			e.ReceivedAt.UTC().Format(time.RFC3339), printable(lastErr))
	}
	return tw.Flush()
}

// showCmd prints one event in full: its row, the headers kept, the payload as stored,
// and the message or status it became.
func showCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("events show", "Shows one event in full (JSON): state, attempts, last error, request id, the headers\n"+
		"kept, the payload as stored, and the message it became.\n  inboxd events show ID", stderr)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	id, err := showID(fs, "event", "events")
	if err != nil {
		return err
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	detail, err := readmodel.ShowEvent(ctx, pool, id)
	if errors.Is(err, readmodel.ErrNotFound) {
		return fmt.Errorf("%w (`inboxd events` lists them)", err)
	}
	if err != nil {
		return dbAdvice(err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(detail)
}

// replayCmd requeues events: the ids given, or up to --limit in --state.
func replayCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := readmodel.ReplayFilter{}
	fs := cliFlags("events replay", "Requeues dead or processed events with a fresh set of attempts:\n"+
		"  inboxd events replay ID…                    these events\n"+
		"  inboxd events replay --state dead [--provider P] [--limit N]\n"+
		"Events pending or processing are left alone; replaying twice changes nothing more.", stderr)
	fs.StringVar(&f.State, "state", "", "replay events in this state: "+strings.Join(readmodel.ReplayableStates, " or "))
	fs.StringVar(&f.Provider, "provider", "", "with --state: only this provider's ("+strings.Join(registry.Names(), ", ")+")")
	fs.IntVar(&f.Limit, "limit", 1000, fmt.Sprintf("with --state: at most this many (up to %d), oldest first", readmodel.MaxReplay))
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	var ids []int64
	for _, a := range fs.Args() {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id < 1 {
			return usageError{fmt.Errorf("event id %q is not a positive whole number", printable(a))}
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) > 0 && f.State != "":
		return usageError{errors.New("give event ids or --state, not both")}
	case len(ids) == 0 && f.State == "":
		return usageError{errors.New("give event ids, or --state dead (or processed)")}
	case len(ids) == 0:
		if err := f.Validate(); err != nil {
			return usageError{err}
		}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	if len(ids) == 0 {
		n, err := readmodel.ReplayMatching(ctx, pool, f)
		if err != nil {
			return dbAdvice(err)
		}
		fmt.Fprintln(stdout, replayedLine(n))
		return nil
	}
	r, err := readmodel.ReplayEach(ctx, pool, ids)
	if err != nil {
		return dbAdvice(err)
	}
	fmt.Fprintln(stdout, replayedLine(r.Requeued))
	if len(r.LeftAlone) > 0 {
		var why []string
		for _, id := range slices.Sorted(maps.Keys(r.LeftAlone)) {
			why = append(why, fmt.Sprintf("%d (%s)", id, leftAloneReasons[r.LeftAlone[id]]))
		}
		fmt.Fprintf(stdout, "left alone: %s\n", strings.Join(why, ", "))
	}
	if len(r.Missing) > 0 {
		return fmt.Errorf("no event has the id %s (`inboxd events` lists them)", joinIDs(r.Missing))
	}
	return nil
}

// leftAloneReasons says why a replay by id left an event alone, by what
// readmodel.ReplayEach found.
var leftAloneReasons = map[string]string{
	"pending":    "pending: on its way already",
	"processing": "processing: on its way already",
	"erased":     "erased: nothing is left to apply",
}

// replayedLine is a replay's summary line.
func replayedLine(n int64) string {
	if n == 1 {
		return "replayed 1 event"
	}
	return fmt.Sprintf("replayed %d events", n)
}

// joinIDs lists ids as "1, 2 or 3".
func joinIDs(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// printable removes control characters (terminal escapes a provider or a client put
// in a string) before it reaches a terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// showID reads the one id a show command takes (`inboxd events show ID`): what it
// names ("event"), under the command that lists them ("events").
func showID(fs *flag.FlagSet, what, command string) (int64, error) {
	if fs.NArg() != 1 {
		return 0, usageError{fmt.Errorf("give one %s id: inboxd %s show ID (`inboxd %s` lists them)", what, command, command)}
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || id < 1 {
		return 0, usageError{fmt.Errorf("%s id %q is not a positive whole number", what, printable(fs.Arg(0)))}
	}
	return id, nil
}

// firstPage cuts rows, read with one more than limit, back to limit, and says whether
// there were more: a list command then says so on stderr, so that a first page is
// never taken for the whole.
func firstPage[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}
