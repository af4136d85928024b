package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
	"inboxd/internal/store"
)

// minWatchInterval is the shortest --interval: the queue's view counts pending and
// processing events, so a zero interval would keep a core of the database busy.
const minWatchInterval = 100 * time.Millisecond

// statsCmd prints the queue (the inbox_queue_stats view): how many events are in each
// state and how old the oldest is; with --watch it redraws every --interval.
func statsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var watch bool
	var interval time.Duration
	fs := cliFlags("stats", "Shows how many events are in each state and how old the oldest is.", stderr)
	fs.BoolVar(&watch, "watch", false, "redraw in place every --interval until interrupted (to a pipe or a file: one line per interval)")
	fs.DurationVar(&interval, "interval", 2*time.Second, "with --watch: how often")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if watch && interval < minWatchInterval {
		return usageError{fmt.Errorf("--interval %s is too short: at least %s (each redraw runs two queries)", interval, minWatchInterval)}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	redraw := watch && isTerminal(stdout)
	for {
		states, err := processor.ReadQueue(ctx, pool)
		if err != nil {
			return dbAdvice(err)
		}
		lanes, err := processor.ReadLanes(ctx, pool)
		if err != nil {
			return dbAdvice(err)
		}
		switch {
		case redraw:
			fmt.Fprint(stdout, "\x1b[H\x1b[2J") // cursor home, clear: redraw in place
			fmt.Fprintf(stdout, "inboxd queue at %s (every %s; Ctrl-C stops)\n\n", time.Now().Format(time.TimeOnly), interval)
			printQueue(stdout, states)
			printLanes(stdout, lanes)
		case watch:
			printQueueLine(stdout, time.Now(), states, lanes) // a log a program or a file can take
		default:
			printQueue(stdout, states)
			printLanes(stdout, lanes)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// printQueue writes the states as a table; an estimated count is marked with "~".
func printQueue(w io.Writer, states []processor.QueueState) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "state\tcount\toldest\t")
	for _, q := range states {
		count := fmt.Sprint(q.Count)
		if !q.Exact {
			count = "~" + count
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", q.State, count, oldest(q))
	}
	tw.Flush()
}

// oldest is the age of a state's oldest event; a state with no events has none ("-",
// where 0s would read as one just now).
func oldest(q processor.QueueState) string {
	if q.Exact && q.Count == 0 {
		return "-"
	}
	return q.OldestAge.Round(time.Millisecond).String()
}

// printLanes writes the busiest lanes with pending events (nothing when none has).
func printLanes(w io.Writer, lanes []processor.LaneState) {
	if len(lanes) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "lane\tpending\toldest due\t")
	for _, l := range lanes {
		name := l.Lane
		if l.Lanes > 1 {
			name = fmt.Sprintf("%s (%d lanes)", l.Lane, l.Lanes)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", name, l.Pending, (time.Duration(l.OldestDueSeconds * float64(time.Second))).Round(time.Millisecond))
	}
	tw.Flush()
}

// printQueueLine writes the states as one line: the time, then state=count (an
// estimate marked ~) and the oldest of each, then the busiest lane's backlog.
func printQueueLine(w io.Writer, at time.Time, states []processor.QueueState, lanes []processor.LaneState) {
	line := at.UTC().Format(time.RFC3339)
	for _, q := range states {
		op := "="
		if !q.Exact {
			op = "~"
		}
		line += fmt.Sprintf(" %s%s%d oldest_%s=%s", q.State, op, q.Count, q.State, oldest(q))
	}
	if len(lanes) > 0 && lanes[0].Lane != "other" {
		line += fmt.Sprintf(" busiest_lane=%s busiest_lane_pending=%d", lanes[0].Lane, lanes[0].Pending)
	}
	fmt.Fprintln(w, line)
}

// isTerminal reports whether w is a terminal (a character device), where escape
// sequences redraw; a pipe or a file gets none.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// cliFlags starts the flag set of an operator command, with --database-url.
func cliFlags(name, what string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("inboxd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: inboxd %s [flags]\n\n%s\n\n", name, what)
		fs.PrintDefaults()
	}
	// The default is described, not shown: DATABASE_URL may hold a password.
	fs.String("database-url", "", "Postgres connection string (default: DATABASE_URL, else "+defaultDatabaseURL+")")
	return fs
}

// cliPool connects to the database of fs's --database-url (fs is parsed).
func cliPool(ctx context.Context, fs *flag.FlagSet, getenv func(string) string) (*pgxpool.Pool, error) {
	url := fs.Lookup("database-url").Value.String()
	if url == "" {
		url = or(getenv("DATABASE_URL"), defaultDatabaseURL)
	}
	pool, err := store.Open(ctx, url, nil)
	if err != nil {
		return nil, dbAdvice(err)
	}
	return pool, nil
}

// parseFlags parses the flags of a command that takes no arguments, turning a
// mistake into a usageError (exit 2). An argument is refused, not ignored: Go's flag
// package would stop at it and ignore every flag after it as well, so that
// `inboxd conversations +15551234567 --provider twilio` listed every conversation.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	return strayArgument(fs)
}

// strayArgument refuses the arguments left after fs's flags, if any.
func strayArgument(fs *flag.FlagSet) error {
	if fs.NArg() == 0 {
		return nil
	}
	hint := ""
	if fs.Lookup("contact") != nil {
		hint = " (a contact goes in --contact)"
	}
	return usageError{fmt.Errorf("unexpected argument %q: `%s` takes flags only%s; `%s --help` lists them",
		printable(fs.Arg(0)), fs.Name(), hint, fs.Name())}
}

// parseArgs parses flags and arguments in any order (`show 5 --json` as well as
// `show --json 5`), leaving the arguments in fs.Args(); after "--" everything is an
// argument.
func parseArgs(fs *flag.FlagSet, args []string) error {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if read := len(args) - len(left); read > 0 && args[read-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest, args = append(rest, left[0]), left[1:]
	}
	return fs.Parse(append([]string{"--"}, rest...))
}
