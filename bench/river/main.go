// Command river-bench is the baseline inboxd is measured against: the same service
// built on River (riverqueue/river), the way a River user who cares about throughput
// would build it. inboxd-bench (cmd/inboxd-bench) runs it as a server and measures it
// with the same load, probes and /proc readings as inboxd (docs/benchmarks.md).
//
// Webhooks go through inboxd's own ingest (verification, group commit); each commit
// also enqueues River jobs for the events it stored, with InsertManyTx in the same
// transaction, so that an event is stored exactly when its job is. Jobs are worked
// by applyEvents (apply.go), with inboxd's set-based normalization SQL, and completed out
// of band by River's batch completer (applying twice is harmless). Those are two
// variants; the third is built on River alone (native.go):
//
//	per-event     one job per event, carrying it
//	batched       one job per commit (at most 64 events), applied set-based
//	batched-copy  batched, its jobs inserted with InsertManyFastTx (COPY)
//	native        River's job table is the inbox: each webhook inserts its event as a
//	              unique job carrying the payload, in a transaction of its own
//
// Commands:
//
//	river-bench serve   --database-url URL --addr HOST:PORT --variant per-event|batched|batched-copy|native --max-workers N
//	river-bench enqueue --database-url URL --variant per-event|batched|batched-copy|native   # jobs for every pending event (a drain's backlog)
//	river-bench noop    --database-url URL --jobs N                      # River's own no-op burn-down, as `river bench` runs it
//
// River lives in this separate module so that it never enters inboxd's go.mod.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"go.uber.org/zap"

	"inboxd/internal/bench"
	"inboxd/internal/ingest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/registry"
	"inboxd/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "river-bench:", err)
		stop()
		os.Exit(1)
	}
}

type options struct {
	dbURL, addr, variant, secret string
	maxWorkers, jobs             int
	fetchCooldown, fetchPoll     time.Duration
	commitWait                   time.Duration // ingest's, for per-event and batched
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: river-bench serve|enqueue|noop [flags]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("river-bench "+cmd, flag.ContinueOnError)
	var o options
	fs.StringVar(&o.dbURL, "database-url", "", "the database, with inboxd's schema (inboxd-bench creates it)")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "serve: HTTP listen address")
	fs.StringVar(&o.variant, "variant", "per-event", "per-event (a job per event), batched (a job per commit), batched-copy (batched, jobs inserted with COPY) or native (River's job table as the inbox)")
	fs.StringVar(&o.secret, "secret", "", "serve: the whsec_ secret /webhooks/generic accepts")
	fs.IntVar(&o.maxWorkers, "max-workers", 16, "serve: River MaxWorkers of the queue")
	fs.IntVar(&o.jobs, "jobs", 100000, "noop: jobs to burn down")
	fs.DurationVar(&o.fetchCooldown, "fetch-cooldown", 2*time.Millisecond, "serve, enqueue: River's FetchCooldown (it also limits insert notifications)")
	fs.DurationVar(&o.fetchPoll, "fetch-poll-interval", 20*time.Millisecond, "serve, enqueue: River's FetchPollInterval")
	fs.DurationVar(&o.commitWait, "commit-wait", ingest.DefaultCommitWait, "serve: longest a webhook waits to share its commit (inboxd's ingest, per-event and batched; INBOX_COMMIT_WAIT in inboxd)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if !slices.Contains([]string{"per-event", "batched", "batched-copy", "native"}, o.variant) {
		return fmt.Errorf("--variant %q: want per-event, batched, batched-copy or native", o.variant)
	}
	if err := setup(ctx, o.dbURL, o.variant == "native"); err != nil {
		return err
	}
	switch cmd {
	case "serve":
		return serve(ctx, o)
	case "enqueue":
		return enqueue(ctx, o)
	case "noop":
		return noop(ctx, o)
	}
	return fmt.Errorf("unknown command %q: want serve, enqueue or noop", cmd)
}

// setup adds River's tables to the database and drops inboxd's NOTIFY trigger: River
// sends its own notifications, and the trigger would charge River for a cost that is
// inboxd's. The native variant also drops the foreign keys to inbound_events.
func setup(ctx context.Context, dbURL string, native bool) error {
	pool, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	if _, err = pool.Exec(ctx, "DROP TRIGGER IF EXISTS inbound_events_notify ON inbound_events"); err != nil {
		return err
	}
	if native {
		return setupNative(ctx, pool)
	}
	return nil
}

// EventArgs is the per-event job: apply one stored event, which the job carries (as
// someone building on River would: the worker need not read its row again).
type EventArgs struct {
	EventID    int64           `json:"event_id"`
	Provider   string          `json:"provider"`
	ReceivedAt time.Time       `json:"received_at"`
	Payload    json.RawMessage `json:"payload"`
}

// Kind names the job for River.
func (EventArgs) Kind() string { return "apply_event" }

// BatchArgs is the batched job: apply the events one commit stored.
type BatchArgs struct {
	EventIDs []int64 `json:"event_ids"`
}

// Kind names the job for River.
func (BatchArgs) Kind() string { return "apply_events" }

// batchSize is the most events a batched job carries: inboxd's INBOX_BATCH_SIZE, so
// that both apply transactions of the same size.
const batchSize = 64

type eventWorker struct {
	river.WorkerDefaults[EventArgs]
	pool *pgxpool.Pool
}

func (w *eventWorker) Work(ctx context.Context, job *river.Job[EventArgs]) error {
	a := job.Args
	return applyRead(ctx, w.pool, []event{{ID: a.EventID, Provider: a.Provider, ReceivedAt: a.ReceivedAt, Payload: a.Payload}})
}

type batchWorker struct {
	river.WorkerDefaults[BatchArgs]
	pool *pgxpool.Pool
}

func (w *batchWorker) Work(ctx context.Context, job *river.Job[BatchArgs]) error {
	return applyEvents(ctx, w.pool, job.Args.EventIDs)
}

// jobs returns the jobs for events (in id order) in the variant's shape: per event
// with the event, or per batch with its ids.
func jobs(variant string, events []ingest.Stored) []river.InsertManyParams {
	var params []river.InsertManyParams
	if variant == "per-event" {
		for _, e := range events {
			args := EventArgs{EventID: e.ID, Provider: e.Provider, ReceivedAt: e.ReceivedAt, Payload: e.Payload}
			params = append(params, river.InsertManyParams{Args: args})
		}
		return params
	}
	for chunk := range slices.Chunk(events, batchSize) {
		ids := make([]int64, len(chunk))
		for i, e := range chunk {
			ids[i] = e.ID
		}
		params = append(params, river.InsertManyParams{Args: BatchArgs{EventIDs: ids}})
	}
	return params
}

// newClient returns a River client working the variant's jobs, configured for
// throughput as River's own benchmark is (FetchCooldown 2 ms, FetchPollInterval
// 20 ms, unless --fetch-cooldown and --fetch-poll-interval say otherwise;
// FetchCooldown also limits how often inserts notify), on a pool sized to its workers:
// every worker holds a connection while it applies, and River's producer,
// completer, notifier and leader need a few more. The pool commits asynchronously,
// like inboxd's processor: a job's effects derive from a durably stored event and
// applying again is harmless.
func newClient(ctx context.Context, o options) (*river.Client[pgx.Tx], *pgxpool.Pool, error) {
	pool, err := store.Open(ctx, o.dbURL, func(c *pgxpool.Config) {
		c.MaxConns = int32(o.maxWorkers + 5)
		c.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	})
	if err != nil {
		return nil, nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &eventWorker{pool: pool})
	river.AddWorker(workers, &batchWorker{pool: pool})
	river.AddWorker(workers, &nativeWorker{pool: pool, normalizers: registry.Normalizers()})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     o.fetchCooldown,
		FetchPollInterval: o.fetchPoll,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.maxWorkers}},
		Workers:           workers,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return client, pool, nil
}

// serve takes webhooks and works their jobs until ctx ends.
func serve(ctx context.Context, o options) error {
	client, pool, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer pool.Close()
	// The webhooks' pool, as inboxd's: durable commits.
	hookPool, err := store.Open(ctx, o.dbURL, func(c *pgxpool.Config) { c.MaxConns = 16 })
	if err != nil {
		return err
	}
	defer hookPool.Close()
	endpoints, err := registry.Open(provider.Config{Values: map[string]string{generic.SecretsKey: o.secret}})
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	var ready atomic.Bool
	mux := http.NewServeMux()
	stopWebhooks := func() {}
	if o.variant == "native" {
		for _, ep := range endpoints {
			if ep.Webhook != nil {
				mux.Handle("POST /webhooks/"+ep.Name, nativeHook(client, hookPool, ep))
			}
		}
	} else {
		stopWebhooks = webhooks(ctx, mux, o.variant, o.commitWait, client, hookPool, endpoints)
	}
	defer stopWebhooks()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	if err := client.Start(ctx); err != nil {
		return err
	}
	ready.Store(true)
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srv.Shutdown(stopCtx)
	stopWebhooks()
	return client.Stop(stopCtx)
}

// webhooks serves inboxd's own ingest on mux (the per-event and batched variants),
// each group commit also inserting the jobs for the events it stored. It returns
// what stops the ingest's writer.
func webhooks(ctx context.Context, mux *http.ServeMux, variant string, commitWait time.Duration, client *river.Client[pgx.Tx], hookPool *pgxpool.Pool, endpoints []provider.Endpoint) (stop func()) {
	writer := ingest.NewWriter(hookPool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{CommitWait: commitWait})
	writer.AlsoInTx(func(ctx context.Context, tx pgx.Tx, stored []ingest.Stored) error {
		if len(stored) == 0 {
			return nil // redeliveries only: nothing new to work
		}
		if variant == "batched-copy" {
			_, err := client.InsertManyFastTx(ctx, tx, jobs(variant, stored))
			return err
		}
		_, err := client.InsertManyTx(ctx, tx, jobs(variant, stored))
		return err
	})
	hooks := ingest.NewHandlers(ingest.Config{Endpoints: endpoints}, writer, zap.NewNop())
	for _, r := range hooks.Routes() {
		mux.Handle("POST "+r.Path, r.Post)
	}
	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	go writer.Run(writerCtx)
	return stopWriter
}

// enqueue inserts jobs for every pending event, as a drain's backlog, in bulk
// (InsertManyFast: COPY), and leaves River's table analyzed.
func enqueue(ctx context.Context, o options) error {
	client, pool, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer pool.Close()
	if o.variant == "native" {
		if err := enqueueNative(ctx, client, pool); err != nil {
			return err
		}
		_, err = pool.Exec(ctx, "VACUUM ANALYZE river_job")
		return err
	}
	rows, err := pool.Query(ctx, "SELECT id, provider, received_at, payload FROM inbound_events WHERE state = 'pending' ORDER BY id")
	if err != nil {
		return err
	}
	pending, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ingest.Stored])
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(jobs(o.variant, pending), 5000) {
		if _, err := client.InsertManyFast(ctx, chunk); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
	}
	_, err = pool.Exec(ctx, "VACUUM ANALYZE river_job")
	return err
}

// NoopArgs is a job that does nothing.
type NoopArgs struct {
	Num int `json:"num"`
}

// Kind names the job for River.
func (NoopArgs) Kind() string { return "noop" }

type noopWorker struct{ river.WorkerDefaults[NoopArgs] }

func (noopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

// noop measures River alone the way its own `river bench --num-total-jobs` does:
// jobs that do nothing, inserted up front with InsertMany in batches of 5,000, then
// worked by a client with 2,000 workers, FetchCooldown 2 ms and FetchPollInterval
// 20 ms on pgxpool's default pool, counted through a subscription to completions
// (which sees the completer's work, not only the workers'), from start to the last
// completion. It prints one result as JSON.
func noop(ctx context.Context, o options) error {
	pool, err := pgxpool.New(ctx, o.dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "TRUNCATE river_job"); err != nil {
		return err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2000}},
		Workers:           workers,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	for start := 0; start < o.jobs; start += 5000 {
		params := make([]river.InsertManyParams, 0, 5000)
		for i := start; i < min(start+5000, o.jobs); i++ {
			params = append(params, river.InsertManyParams{Args: NoopArgs{Num: i}})
		}
		if _, err := client.InsertMany(ctx, params); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
	}
	completed, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: o.jobs, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer client.Stop(context.WithoutCancel(ctx))
	var last time.Time
	for n := 0; n < o.jobs; n++ {
		select {
		case <-completed:
			last = time.Now()
		case <-time.After(time.Minute):
			return fmt.Errorf("only %d of %d no-op jobs completed, then a minute without one", n, o.jobs)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := bench.Result{System: "river-noop", Mode: "drain", Events: o.jobs, EventsPerSec: float64(o.jobs) / last.Sub(start).Seconds()}
	return json.NewEncoder(os.Stdout).Encode([]bench.Result{r})
}
