package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"

	"inboxd/internal/processor"
	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
	"inboxd/internal/store"
)

// tailCmd prints each event as it arrives, one line each, until interrupted. It
// LISTENs on inbound_events (the notification carries the id; the line's other fields
// are read from the table, many ids at a time under load) and reconnects by itself;
// what arrived while it was disconnected is printed when it is back.
func tailCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var provider string
	var asJSON bool
	fs := cliFlags("tail", "Prints each event as it arrives (time, id, provider, external id, type) until interrupted.\n"+
		"It LISTENs on inbound_events and reconnects by itself.", stderr)
	fs.StringVar(&provider, "provider", "", "only this provider's events: "+strings.Join(registry.Names(), ", "))
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := readmodel.CheckProvider(provider); err != nil {
		return usageError{err}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	t := &tailer{pool: pool, provider: provider, json: asJSON, out: stdout, errs: stderr, wake: make(chan struct{}, 1)}
	if err := pool.QueryRow(ctx, "SELECT COALESCE(max(id), 0) FROM inbound_events").Scan(&t.last); err != nil {
		return dbAdvice(err)
	}
	url := pool.Config().ConnConfig.ConnString()
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			cfg, err := pgx.ParseConfig(url)
			if err != nil {
				return nil, err
			}
			cfg.DialFunc = store.Dialer().DialContext
			return pgx.ConnectConfig(ctx, cfg)
		},
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				fmt.Fprintf(stderr, "inboxd tail: %v; reconnecting\n", err)
			}
		},
		ReconnectDelay: time.Second,
	}
	l.Handle(processor.Channel, t)
	go t.print(ctx)
	if err := l.Listen(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// tailRetry is how long tail waits to read again after a read failed.
const tailRetry = time.Second

// tailGapPage is how many events one read of a gap lists; a longer gap is read page
// after page.
const tailGapPage = 10000

// tailer collects the ids that notifications announce and prints their events.
type tailer struct {
	pool     *pgxpool.Pool
	provider string
	json     bool
	out      io.Writer
	errs     io.Writer
	wake     chan struct{} // capacity 1: ids or a gap are waiting
	gapPage  int           // 0: tailGapPage

	mu        sync.Mutex
	ids       []int64
	last      int64 // the highest id printed (or seen at start)
	gap       bool  // reconnected: print everything after last
	connected bool
	// gapped are the ids the last reconnection's listing printed: their notifications,
	// which can come after the listing, are not printed again. paging: that listing
	// has more pages to read.
	gapped map[int64]bool
	paging bool
	// widths are the widest id, provider and external id printed (line).
	widths [3]int
}

// HandleNotification queues the announced id ({"id":N,"provider":"…"}).
func (t *tailer) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	var note struct {
		ID       int64  `json:"id"`
		Provider string `json:"provider"`
	}
	if json.Unmarshal([]byte(n.Payload), &note) != nil || (t.provider != "" && !provider.Matches(t.provider, note.Provider)) {
		return nil
	}
	t.mu.Lock()
	t.ids = append(t.ids, note.ID)
	t.mu.Unlock()
	signalTail(t.wake)
	return nil
}

// HandleBacklog runs on every (re)connection: after the first, what arrived while
// disconnected is printed.
func (t *tailer) HandleBacklog(context.Context, string, *pgx.Conn) error {
	t.mu.Lock()
	again := t.connected
	t.connected, t.gap = true, again
	t.mu.Unlock()
	if again {
		fmt.Fprintln(t.errs, "inboxd tail: reconnected; what arrived meanwhile follows")
		signalTail(t.wake)
	} else {
		fmt.Fprintln(t.errs, "inboxd tail: listening on inbound_events (Ctrl-C stops)")
	}
	return nil
}

// print waits for ids and prints their events in batches until ctx ends.
func (t *tailer) print(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		}
		t.mu.Lock()
		ids, gap, after := t.ids, t.gap, t.last
		t.ids, t.gap = nil, false
		t.mu.Unlock()
		var arrivals []readmodel.Arrival
		var err error
		if gap {
			arrivals, err = t.readGap(ctx, after)
		} else if ids = slices.DeleteFunc(ids, func(id int64) bool { return t.gapped[id] }); len(ids) > 0 {
			arrivals, err = readmodel.Arrivals(ctx, t.pool, ids)
		}
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(t.errs, "inboxd tail: %v; trying again in %s\n", err, tailRetry)
			}
			// What the failed read was to print is printed by the next, which reads
			// everything after the last event printed, as after a reconnection.
			t.mu.Lock()
			t.gap = true
			t.mu.Unlock()
			time.AfterFunc(tailRetry, func() { signalTail(t.wake) })
			continue
		}
		t.show(arrivals)
	}
}

// readGap reads a page of what arrived after the last event printed. A full page
// marks the gap as still open, so that the next round reads on from its end.
func (t *tailer) readGap(ctx context.Context, after int64) ([]readmodel.Arrival, error) {
	page := cmp.Or(t.gapPage, tailGapPage)
	arrivals, err := readmodel.ArrivalsAfter(ctx, t.pool, after, page)
	if err != nil {
		return nil, err
	}
	if !t.paging {
		t.gapped = map[int64]bool{}
	}
	for _, a := range arrivals {
		t.gapped[a.ID] = true
	}
	if t.paging = len(arrivals) == page; t.paging {
		t.mu.Lock()
		t.gap = true
		t.mu.Unlock()
		signalTail(t.wake)
	}
	return arrivals, nil
}

// line is an arrival's line: time, id, provider, external id, type. Each column but
// the last is as wide as the widest value it has printed, so that lines line up
// once each width has been seen (a stream cannot know them ahead).
func (t *tailer) line(a readmodel.Arrival) string {
	var b strings.Builder
	b.WriteString(a.ReceivedAt.UTC().Format("2006-01-02T15:04:05.000Z"))
	for i, col := range []string{strconv.FormatInt(a.ID, 10), a.Provider, printable(a.ExternalID)} {
		t.widths[i] = max(t.widths[i], utf8.RuneCountInString(col))
		fmt.Fprintf(&b, "  %-*s", t.widths[i], col)
	}
	b.WriteString("  " + printable(a.Type))
	return b.String()
}

// show prints arrivals and remembers the highest id.
func (t *tailer) show(arrivals []readmodel.Arrival) {
	enc := json.NewEncoder(t.out)
	for _, a := range arrivals {
		if t.provider != "" && !provider.Matches(t.provider, a.Provider) {
			continue
		}
		if t.json {
			_ = enc.Encode(a)
		} else {
			fmt.Fprintln(t.out, t.line(a))
		}
	}
	if len(arrivals) > 0 {
		t.mu.Lock()
		t.last = max(t.last, slices.MaxFunc(arrivals, func(a, b readmodel.Arrival) int { return cmp.Compare(a.ID, b.ID) }).ID)
		t.mu.Unlock()
	}
}

func signalTail(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
