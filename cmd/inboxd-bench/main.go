// Command inboxd-bench measures inboxd on this machine: the commit ceiling, how fast a
// backlog drains, and open-loop webhook load at fixed rates with acknowledgement and
// end-to-end latency (docs/benchmarks.md). It lives beside the product, not in it: it
// drops and recreates its database, and runs the inboxd binary it is pointed at
// (--inboxd) as a subprocess.
//
//	inboxd-bench ceiling|drain|rate|ramp|all [flags]
//	inboxd-bench report [--svg chart.svg] FILE.json…
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/bench"
	"inboxd/internal/processor"
	"inboxd/internal/store"
)

const (
	benchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	benchServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "inboxd-bench: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// run runs the mode named by args[0] (all by default).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	mode := "all"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		mode, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("inboxd-bench "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("database-url", "", "server to measure on; the database inboxd_bench is created (and emptied) there (default: INBOXD_BENCH_DATABASE_URL, else "+benchServer+")")
	rate := fs.Int("rate", 1000, "rate: events per second")
	duration := fs.Duration("duration", 10*time.Second, "rate: how long; ramp: per step")
	warmup := fs.Duration("warmup", 2*time.Second, "rate, ramp: unmeasured load at the same rate before each measurement")
	rampStart := fs.Int("ramp-start", 1000, "ramp: first rate")
	rampStep := fs.Int("ramp-step", 1000, "ramp: increase per step")
	rampMax := fs.Int("ramp-max", 10000, "ramp: highest rate tried")
	slo := fs.Float64("slo-p99-ms", 100, "ramp: end-to-end p99 a step must stay under")
	events := fs.Int("events", 100000, "drain: backlog size")
	rows := fs.Int("rows", 5000000, "retention: processed events older than INBOX_RETENTION stored before the run")
	retention := fs.Duration("retention", time.Minute, "growth: INBOX_RETENTION of the run")
	clients := fs.Int("clients", 16, "ceiling: concurrent connections")
	binary := fs.String("inboxd", "inboxd", "the inboxd binary to measure (build it with go build -o inboxd ./cmd/inboxd)")
	workers := fs.Int("workers", 8, "inboxd processing batches in flight (INBOX_WORKERS)")
	batch := fs.Int("batch-size", 64, "inboxd events per batch (INBOX_BATCH_SIZE)")
	asJSON := fs.Bool("json", false, "print results as JSON instead of a table")
	svg := fs.String("svg", "", "ramp/report: write a latency chart (SVG) here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" {
		*server = or(getenv("INBOXD_BENCH_DATABASE_URL"), benchServer)
	}
	var results []bench.Result
	var err error
	if mode == "report" {
		results, err = readResults(fs.Args())
	} else {
		results, err = runBench(ctx, mode, benchOptions{
			server: *server, rate: *rate, duration: *duration, warmup: *warmup, rampStart: *rampStart, rampStep: *rampStep,
			rampMax: *rampMax, slo: *slo, events: *events, clients: *clients, workers: *workers, batch: *batch, binary: *binary,
			rows: *rows, retention: *retention,
		}, stderr)
	}
	if err != nil {
		return err
	}
	if *svg != "" {
		f, err := os.Create(*svg)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := bench.WriteSVG(f, results); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	bench.PrintTable(stdout, results)
	return nil
}

type benchOptions struct {
	server                             string
	rate, rampStart, rampStep, rampMax int
	duration, warmup                   time.Duration
	slo                                float64
	events, clients, workers, batch    int
	binary                             string // the inboxd to run
	rows                               int
	retention                          time.Duration
}

func runBench(ctx context.Context, mode string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	switch mode {
	case "ceiling", "drain", "rate", "ramp", "all", "retention", "growth":
	default:
		return nil, fmt.Errorf("unknown bench mode %q: want ceiling, drain, rate, ramp, all, retention, growth or report", mode)
	}
	dbURL, pool, err := bench.CreateDatabase(ctx, o.server, "inboxd_bench")
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	one := func(r bench.Result, err error) ([]bench.Result, error) { return []bench.Result{r}, err }
	steps := []struct {
		mode string
		run  func() ([]bench.Result, error)
	}{
		{"ceiling", func() ([]bench.Result, error) { return one(bench.Ceiling(ctx, pool, o.clients, o.duration)) }},
		{"drain", func() ([]bench.Result, error) { return one(benchDrain(ctx, pool, dbURL, o)) }},
		{"rate", func() ([]bench.Result, error) { return benchRates(ctx, pool, dbURL, o, []int{o.rate}, progress) }},
		{"ramp", func() ([]bench.Result, error) { return benchRamp(ctx, pool, dbURL, o, progress) }},
		{"retention", func() ([]bench.Result, error) { return benchRetention(ctx, pool, dbURL, o, progress) }},
		{"growth", func() ([]bench.Result, error) { return one(benchGrowth(ctx, pool, dbURL, o, progress)) }},
	}
	var results []bench.Result
	for _, s := range steps {
		if mode != s.mode && (mode != "all" || s.mode == "retention" || s.mode == "growth") {
			continue
		}
		fmt.Fprintf(progress, "== %s\n", s.mode)
		rs, err := s.run()
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// benchDrain stores a backlog with no processor running, then runs one (the same code
// as inboxd serve) until the queue is empty.
func benchDrain(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions) (bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return bench.Result{}, err
	}
	if err := bench.FillEvents(ctx, pool, o.events); err != nil {
		return bench.Result{}, err
	}
	procPool, err := store.Open(ctx, dbURL, func(c *pgxpool.Config) { processor.ConfigurePool(c, o.workers) })
	if err != nil {
		return bench.Result{}, err
	}
	defer procPool.Close()
	p := processor.New(procPool, dbURL, processor.Config{Workers: o.workers, BatchSize: o.batch}, zap.NewNop(), processor.NewMetrics(nil))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	defer func() { stop(); <-done }()
	return bench.Drain(ctx, "inboxd", pool, o.events, func() {
		go func() { p.Run(runCtx); close(done) }()
	}, bench.QueueEmpty(pool))
}

// benchRamp raises the rate until a step misses the SLO.
func benchRamp(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	var rates []int
	for r := o.rampStart; r <= o.rampMax; r += o.rampStep {
		rates = append(rates, r)
	}
	return benchRates(ctx, pool, dbURL, o, rates, progress)
}

// benchRates runs an inboxd serve subprocess and one open-loop step per rate (the
// database emptied before each), stopping after the first step that misses the SLO.
func benchRates(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, rates []int, progress io.Writer) ([]bench.Result, error) {
	base, stop, pid, err := startTarget(ctx, dbURL, o, nil)
	if err != nil {
		return nil, err
	}
	defer stop()
	meter, err := bench.NewCPUMeter(ctx, pool, pid)
	if err != nil {
		fmt.Fprintf(progress, "not measuring CPU: %v\n", err)
	}
	return bench.Ramp(rates, o.slo, func(rate int) (bench.Result, error) {
		if err := bench.Reset(ctx, pool); err != nil {
			return bench.Result{}, err
		}
		r, err := bench.RunRate(ctx, bench.RateConfig{System: "inboxd", URL: base, Secret: benchSecret, Rate: rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: progress, CPU: meter})
		if err == nil {
			fmt.Fprintf(progress, "inboxd at %d/s: achieved %.0f/s, e2e p99 %v, errors %d\n", rate, r.AchievedRate, r.EndToEnd.P99, r.Errors)
		}
		return r, err
	})
}

// startTarget runs `inboxd serve` (the --inboxd binary) on a free port against dbURL,
// with env added to its environment.
func startTarget(ctx context.Context, dbURL string, o benchOptions, env []string) (string, func(), int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, 0, err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := exec.LookPath(o.binary)
	if err != nil {
		return "", nil, 0, fmt.Errorf("--inboxd %s: %w (build it: go build -o inboxd ./cmd/inboxd, then --inboxd ./inboxd)", o.binary, err)
	}
	cmd := exec.Command(self, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "INBOX_DEBUG_ADDR="+os.Getenv("INBOXD_BENCH_DEBUG_ADDR"), "INBOX_ADDR="+addr, "INBOX_GENERIC_SECRETS="+benchSecret,
		"INBOX_LOG_LEVEL=warn", fmt.Sprintf("INBOX_WORKERS=%d", o.workers), fmt.Sprintf("INBOX_BATCH_SIZE=%d", o.batch))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, 0, fmt.Errorf("start inboxd serve: %w", err)
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, stop, cmd.Process.Pid, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, 0, errors.New("inboxd serve did not become ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func readResults(files []string) ([]bench.Result, error) {
	var all []bench.Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var rs []bench.Result
		if err := json.Unmarshal(b, &rs); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		all = append(all, rs...)
	}
	return all, nil
}
