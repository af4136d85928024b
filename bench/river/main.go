// Command river-bench is the baseline inboxd is measured against: what a user would
// build with River (riverqueue/river) instead. A webhook handler stores the event and
// enqueues a River job in the same transaction; a River worker applies exactly
// inboxd's normalization SQL (processor.ApplyOne) and completes the job in the same
// transaction. It runs the same drain and rate workloads with the same measuring
// code (internal/bench) and prints the same results.
//
// River lives in this separate module so that it never enters inboxd's go.mod.
//
//	go run . drain --events 100000
//	go run . ramp --ramp-start 1000 --ramp-step 1000
package main

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"inboxd/internal/bench"
	"inboxd/internal/ingest"
	"inboxd/internal/processor"
	"inboxd/internal/store"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "river-bench:", err)
		os.Exit(1)
	}
}

type options struct {
	mode                              string
	server                            string
	events, rate, rampStart, rampStep int
	rampMax, maxWorkers               int
	duration, fetchCooldown, warmup   time.Duration
	slo                               float64
	asJSON                            bool
	work                              string
}

func run(ctx context.Context, args []string) error {
	o := options{mode: "drain"}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.mode, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("river-bench "+o.mode, flag.ContinueOnError)
	fs.StringVar(&o.server, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "server; the database inboxd_bench_river is created there")
	fs.IntVar(&o.events, "events", 100000, "drain: backlog size")
	fs.IntVar(&o.rate, "rate", 1000, "rate: events per second")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "rate: how long; ramp: per step")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "rate, ramp: unmeasured load at the same rate before each measurement")
	fs.IntVar(&o.rampStart, "ramp-start", 1000, "ramp: first rate")
	fs.IntVar(&o.rampStep, "ramp-step", 1000, "ramp: increase per step")
	fs.IntVar(&o.rampMax, "ramp-max", 10000, "ramp: highest rate tried")
	fs.Float64Var(&o.slo, "slo-p99-ms", 100, "ramp: end-to-end p99 a step must stay under")
	fs.IntVar(&o.maxWorkers, "max-workers", 50, "River MaxWorkers for the queue (each holds a connection while it works)")
	fs.DurationVar(&o.fetchCooldown, "fetch-cooldown", river.FetchCooldownMin, "River FetchCooldown (River's default is 100ms)")
	fs.BoolVar(&o.asJSON, "json", false, "print results as JSON")
	fs.StringVar(&o.work, "work", "normalize", "what a job does: normalize (inboxd's SQL) or noop (River's own overhead)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dbURL, pool, err := setup(ctx, o.server)
	if err != nil {
		return err
	}
	defer pool.Close()
	var results []bench.Result
	switch o.mode {
	case "drain":
		var r bench.Result
		r, err = drain(ctx, pool, dbURL, o)
		results = []bench.Result{r}
	case "rate", "ramp":
		results, err = rates(ctx, pool, dbURL, o)
	default:
		err = fmt.Errorf("unknown mode %q: want drain, rate or ramp", o.mode)
	}
	if err != nil {
		return err
	}
	if o.asJSON {
		return json.NewEncoder(os.Stdout).Encode(results)
	}
	bench.PrintTable(os.Stdout, results)
	return nil
}

// setup makes a database with inboxd's schema plus River's, without inboxd's NOTIFY
// trigger: River sends its own notifications, and the trigger would charge River for
// a cost that is inboxd's.
func setup(ctx context.Context, server string) (string, *pgxpool.Pool, error) {
	dbURL, pool, err := bench.CreateDatabase(ctx, server, "inboxd_bench_river")
	if err != nil {
		return "", nil, err
	}
	if _, err := pool.Exec(ctx, "DROP TRIGGER inbound_events_notify ON inbound_events"); err != nil {
		return "", nil, err
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return "", nil, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return "", nil, fmt.Errorf("river migrations: %w", err)
	}
	return dbURL, pool, nil
}

// NormalizeArgs is the job: apply one stored event.
type NormalizeArgs struct {
	EventID int64 `json:"event_id"`
}

// Kind names the job for River.
func (NormalizeArgs) Kind() string { return "normalize" }

// NormalizeWorker does inboxd's work for one event, in one transaction with the
// job's completion, as River recommends for transactional work.
type NormalizeWorker struct {
	river.WorkerDefaults[NormalizeArgs]
	pool *pgxpool.Pool
	noop bool // mark the event processed and complete the job, nothing else
}

// Work applies the event.
func (w *NormalizeWorker) Work(ctx context.Context, job *river.Job[NormalizeArgs]) error {
	if w.noop {
		_, err := w.pool.Exec(ctx, "UPDATE inbound_events SET state = 'processed', processed_at = clock_timestamp() WHERE id = $1", job.Args.EventID)
		return err
	}
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		// Same planner protection inboxd's processor has, for these statements only.
		if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return err
		}
		var provider string
		var payload []byte
		var received time.Time
		err := tx.QueryRow(ctx, "SELECT provider, payload, received_at FROM inbound_events WHERE id = $1", job.Args.EventID).
			Scan(&provider, &payload, &received)
		if err != nil {
			return err
		}
		if err := processor.ApplyOne(ctx, tx, provider, job.Args.EventID, payload, received); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE inbound_events SET state = 'processed', attempts = attempts + 1, processed_at = clock_timestamp() WHERE id = $1", job.Args.EventID); err != nil {
			return err
		}
		_, err = river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		return err
	})
}

// newClient builds the River client. Its worker pool commits asynchronously, the same
// durability inboxd's processor has (the event itself was stored durably).
func newClient(ctx context.Context, dbURL string, o options) (*river.Client[pgx.Tx], *pgxpool.Pool, error) {
	pool, err := store.Open(ctx, dbURL, func(c *pgxpool.Config) {
		c.MaxConns = int32(o.maxWorkers + 10) // every worker holds a connection for its transaction; River needs a few more
		c.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	})
	if err != nil {
		return nil, nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &NormalizeWorker{pool: pool, noop: o.work == "noop"})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.maxWorkers}},
		Workers:       workers,
		FetchCooldown: o.fetchCooldown,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return client, pool, nil
}

// drain stores a backlog of events and their jobs, then starts River.
func drain(ctx context.Context, pool *pgxpool.Pool, dbURL string, o options) (bench.Result, error) {
	if err := bench.FillEvents(ctx, pool, o.events); err != nil {
		return bench.Result{}, err
	}
	client, workPool, err := newClient(ctx, dbURL, o)
	if err != nil {
		return bench.Result{}, err
	}
	defer workPool.Close()
	rows, err := pool.Query(ctx, "SELECT id FROM inbound_events ORDER BY id")
	if err != nil {
		return bench.Result{}, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return bench.Result{}, err
	}
	for start := 0; start < len(ids); start += 5000 {
		params := make([]river.InsertManyParams, 0, 5000)
		for _, id := range ids[start:min(start+5000, len(ids))] {
			params = append(params, river.InsertManyParams{Args: NormalizeArgs{EventID: id}})
		}
		if _, err := client.InsertManyFast(ctx, params); err != nil {
			return bench.Result{}, fmt.Errorf("insert jobs: %w", err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE river_job"); err != nil {
		return bench.Result{}, err
	}
	defer client.Stop(context.WithoutCancel(ctx))
	system := "river"
	if o.work == "noop" {
		system = "river-noop"
	}
	var startErr error
	r, err := bench.Drain(ctx, system, pool, o.events, func() { startErr = client.Start(ctx) }, func(ctx context.Context) (bool, error) {
		if startErr != nil {
			return false, startErr
		}
		var open bool
		err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM river_job WHERE state NOT IN ('completed', 'discarded', 'cancelled'))").Scan(&open)
		return !open, err
	})
	return r, err
}

// rates serves webhooks the River way and runs the open-loop load against itself.
func rates(ctx context.Context, pool *pgxpool.Pool, dbURL string, o options) ([]bench.Result, error) {
	client, workPool, err := newClient(ctx, dbURL, o)
	if err != nil {
		return nil, err
	}
	defer workPool.Close()
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	defer client.Stop(context.WithoutCancel(ctx))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// Webhooks get a pool of their own, the size of inboxd's ingest pool.
	hookPool, err := store.Open(ctx, dbURL, func(c *pgxpool.Config) { c.MaxConns = 16 })
	if err != nil {
		return nil, err
	}
	defer hookPool.Close()
	srv := &http.Server{Handler: webhook(hookPool, client)}
	go srv.Serve(ln)
	defer srv.Close()
	list := []int{o.rate}
	if o.mode == "ramp" {
		list = nil
		for r := o.rampStart; r <= o.rampMax; r += o.rampStep {
			list = append(list, r)
		}
	}
	return bench.Ramp(list, o.slo, func(rate int) (bench.Result, error) {
		if _, err := pool.Exec(ctx, "TRUNCATE inbound_events, conversations, messages, pending_statuses, river_job RESTART IDENTITY CASCADE"); err != nil {
			return bench.Result{}, err
		}
		r, err := bench.RunRate(ctx, bench.RateConfig{System: "river", URL: "http://" + ln.Addr().String(),
			Secret: secret, Rate: rate, Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: os.Stderr})
		if err == nil {
			fmt.Fprintf(os.Stderr, "river at %d/s: achieved %.0f/s, e2e p99 %v, errors %d\n", rate, r.AchievedRate, r.EndToEnd.P99, r.Errors)
		}
		return r, err
	})
}

// webhook is the River way to take a Standard Webhooks event: verify, then store the
// event and enqueue its job in one transaction per request, then answer.
func webhook(pool *pgxpool.Pool, client *river.Client[pgx.Tx]) http.Handler {
	keys, _ := ingest.ParseGenericSecrets([]string{secret})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
		if err != nil || !verify(keys[0], r.Header, body) || !json.Valid(body) {
			http.Error(w, `{"error":{"code":"rejected","message":"bad request or signature"}}`, http.StatusUnauthorized)
			return
		}
		var id int64
		duplicate := false
		err = pgx.BeginFunc(r.Context(), pool, func(tx pgx.Tx) error {
			err := tx.QueryRow(r.Context(), `INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', $1, $2)
ON CONFLICT (provider, external_id) DO NOTHING RETURNING id`, r.Header.Get("webhook-id"), body).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				duplicate = true
				return tx.QueryRow(r.Context(), "SELECT id FROM inbound_events WHERE provider = 'generic' AND external_id = $1", r.Header.Get("webhook-id")).Scan(&id)
			}
			if err != nil {
				return err
			}
			_, err = client.InsertTx(r.Context(), tx, NormalizeArgs{EventID: id}, nil)
			return err
		})
		if err != nil {
			http.Error(w, `{"error":{"code":"database_unavailable","message":"retry"}}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"events":[{"id":%d,"duplicate":%t}]}`, id, duplicate)
	})
}

// verify checks the Standard Webhooks signature (timestamp tolerance omitted: the
// benchmark signs as it sends).
func verify(key []byte, h http.Header, body []byte) bool {
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return false
	}
	want := ingest.SignGeneric(key, h.Get("webhook-id"), ts, body)
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}
