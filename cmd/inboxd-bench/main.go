// Command inboxd-bench measures inboxd on this machine, and the River baseline beside
// it (bench/river): the commit ceiling, how fast a backlog drains, open-loop webhook
// load at fixed rates with acknowledgement and end-to-end latency and the CPU it
// costs, and the highest rate within the SLO (docs/benchmarks.md). It lives beside
// the product, not in it: it drops and recreates its database, and runs the binaries
// it is pointed at (--inboxd, --river) as server subprocesses.
//
//	inboxd-bench ceiling|drain|noop|rate|ramp|cost|compare|retention|erasure|deliver|growth|flood-ack|flood [flags]
//	inboxd-bench report [--svg chart.svg] FILE.json…
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
	"inboxd/internal/ingest"
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

// compareTargets are the systems compare measures by default: inboxd, the best
// River a River user could build (its batches), and the one someone starting from
// River would build (native). The controls (inboxd-batch1, river-per-event) run on
// request: they only show what batching buys, and overloaded at 3,000/s they would
// take most of the run.
const compareTargets = "inboxd,river-batched,river-native"

var modes = []string{"ceiling", "drain", "noop", "rate", "ramp", "cost", "compare", "retention", "erasure", "deliver", "growth", "flood-ack", "flood", "report"}

// run runs the mode named by args[0] (compare by default).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	mode := "compare"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		mode, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("inboxd-bench "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("database-url", "", "server to measure on; the database inboxd_bench is created (and emptied) there (default: INBOXD_BENCH_DATABASE_URL, else "+benchServer+")")
	targets := fs.String("targets", "inboxd", "systems to measure, comma-separated: inboxd, inboxd-batch1, river-per-event, river-batched, river-batched-copy, river-native (compare: "+compareTargets+" unless set)")
	rate := fs.Int("rate", 1000, "rate: events per second")
	costRates := fs.String("cost-rates", "1000,3000", "cost, compare: the fixed rates the CPU per event is measured at")
	repeat := fs.Int("repeat", 7, "drain, cost, compare: runs of each system (at each cost rate), interleaved in a random order; the median and interquartile range are reported")
	duration := fs.Duration("duration", 15*time.Second, "rate: how long; ramp: per step")
	warmup := fs.Duration("warmup", 2*time.Second, "rate, ramp: unmeasured load at the same rate before each measurement")
	rampStart := fs.Int("ramp-start", 1000, "ramp: first rate")
	rampStep := fs.Int("ramp-step", 1000, "ramp: increase per step")
	rampMax := fs.Int("ramp-max", 10000, "ramp: highest rate tried")
	slo := fs.Float64("slo-p99-ms", 100, "ramp: end-to-end p99 a step must stay under")
	events := fs.Int("events", 50000, "drain: backlog size; deliver: changes replayed to a subscription")
	noopJobs := fs.Int("noop-jobs", 200000, "noop: River no-op jobs to burn down")
	rows := fs.Int("rows", 5000000, "retention: processed events older than INBOX_RETENTION stored before the run; erasure: events of other contacts")
	contactMessages := fs.Int("contact-messages", 100000, "erasure: messages of the contact erased during the run")
	retention := fs.Duration("retention", time.Minute, "growth: INBOX_RETENTION of the run")
	clients := fs.Int("clients", 16, "ceiling: concurrent connections")
	binary := fs.String("inboxd", "", "the inboxd binary to measure (go build -o inboxd ./cmd/inboxd)")
	river := fs.String("river", "", "the River baseline's binary (cd bench/river && go build -o ../../river-bench .)")
	maxWorkers := fs.String("max-workers", "4,8,16,32,64", "River's MaxWorkers: drain tries each (compare then uses the fastest); rate, ramp and cost use the first")
	riverCooldown := fs.Duration("river-fetch-cooldown", 2*time.Millisecond, "River's FetchCooldown (river-bench --fetch-cooldown)")
	riverPoll := fs.Duration("river-fetch-poll-interval", 20*time.Millisecond, "River's FetchPollInterval (river-bench --fetch-poll-interval)")
	commitWait := fs.Duration("commit-wait", ingest.DefaultCommitWait, "inboxd's INBOX_COMMIT_WAIT: longest a webhook waits to share its commit")
	riverCommitWait := fs.Duration("river-commit-wait", ingest.DefaultCommitWait, "the same for River per-event and batched, which take webhooks with inboxd's ingest (river-bench --commit-wait)")
	workers := fs.Int("workers", 8, "inboxd processing batches in flight (INBOX_WORKERS)")
	batch := fs.Int("batch-size", 64, "inboxd events per batch (INBOX_BATCH_SIZE)")
	processes := fs.Int("processes", 1, "rate, ramp, cost: server processes of each system on its database, the load sent to each in turn (CPU counts them all)")
	asJSON := fs.Bool("json", false, "print results as JSON instead of a table")
	svg := fs.String("svg", "", "ramp, compare, report: write a latency chart (SVG) here")
	markdown := fs.Bool("markdown", false, "report: print docs/benchmarks.md's tables (Markdown) instead of the text tables")
	headline := fs.String("headline", "", "report: print the README's line on inboxd against this system (river-batched) instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 && mode != "report" { // report reads the files it is given
		// The flag package stops at an argument and ignores every flag after it: a run
		// with them silently left at their defaults would be measured and reported.
		return fmt.Errorf("unexpected argument %q: inboxd-bench %s takes flags only (--help lists them)", fs.Arg(0), mode)
	}
	if *server == "" {
		*server = or(getenv("INBOXD_BENCH_DATABASE_URL"), benchServer)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if mode == "compare" && !set["targets"] {
		*targets = compareTargets
	}
	o := benchOptions{
		server: *server, rate: *rate, duration: *duration, warmup: *warmup, rampStart: *rampStart, rampStep: *rampStep,
		rampMax: *rampMax, slo: *slo, events: *events, clients: *clients, workers: *workers, batch: *batch, binary: *binary,
		river: *river, rows: *rows, contactMessages: *contactMessages, retention: *retention, progress: stderr, noopJobs: *noopJobs, repeat: max(*repeat, 1),
		processes: max(*processes, 1), riverCooldown: *riverCooldown, riverPoll: *riverPoll,
		commitWait: *commitWait, riverCommitWait: *riverCommitWait,
	}
	var err error
	if o.targets, err = parseTargets(*targets); err != nil {
		return err
	}
	if o.riverWorkers, err = parseInts("max-workers", *maxWorkers); err != nil {
		return err
	}
	if o.costRates, err = parseInts("cost-rates", *costRates); err != nil {
		return err
	}
	var results []bench.Result
	if mode == "report" {
		results, err = readResults(fs.Args())
	} else {
		results, err = runBench(ctx, mode, o)
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
	switch {
	case *headline != "":
		line := bench.Headline(results, *headline)
		if line == "" {
			return fmt.Errorf("--headline %s: the results have no repeated drain or cost runs of inboxd and %s", *headline, *headline)
		}
		_, err := fmt.Fprintln(stdout, line)
		return err
	case *markdown:
		return bench.WriteMarkdown(stdout, results)
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	bench.PrintTable(stdout, results)
	return nil
}

type benchOptions struct {
	server                             string
	targets                            []target
	rate, rampStart, rampStep, rampMax int
	costRates, riverWorkers            []int
	duration, warmup                   time.Duration
	slo                                float64
	events, clients, workers, batch    int
	noopJobs, repeat, processes        int
	riverCooldown, riverPoll           time.Duration // River's FetchCooldown and FetchPollInterval
	commitWait, riverCommitWait        time.Duration // ingest's commit wait in inboxd, in River per-event and batched
	binary, river                      string        // the binaries to run
	rows, contactMessages              int
	retention                          time.Duration
	progress                           io.Writer
}

// runBench runs a mode. compare runs everything docs/benchmarks.md reports, for every
// system, in one go: the ceiling; drains (River's at each --max-workers); River's
// no-op; the cost at --cost-rates; a ramp each (River at its fastest MaxWorkers).
func runBench(ctx context.Context, mode string, o benchOptions) ([]bench.Result, error) {
	switch mode {
	case "ceiling", "drain", "noop", "rate", "ramp", "cost", "compare", "retention", "erasure", "deliver", "growth", "flood-ack", "flood":
	default:
		return nil, fmt.Errorf("unknown bench mode %q: want one of %v", mode, modes)
	}
	one := func(r bench.Result, err error) ([]bench.Result, error) { return []bench.Result{r}, err }
	// Every measurement gets a database of its own, made afresh: one system's run leaves
	// nothing behind for the next (River's setup drops inboxd's trigger, for one).
	withDB := func(run func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error)) ([]bench.Result, error) {
		dbURL, pool, err := bench.CreateDatabase(ctx, o.server, "inboxd_bench")
		if err != nil {
			return nil, err
		}
		defer pool.Close()
		return run(dbURL, pool)
	}
	var results []bench.Result
	steps := []struct {
		mode string
		run  func() ([]bench.Result, error)
	}{
		{"ceiling", func() ([]bench.Result, error) {
			return withDB(func(_ string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return one(bench.Ceiling(ctx, pool, o.clients, o.duration))
			})
		}},
		{"drain", func() ([]bench.Result, error) { return o.drains(ctx, withDB) }},
		{"noop", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, _ *pgxpool.Pool) ([]bench.Result, error) { return o.riverNoop(ctx, dbURL) })
		}},
		{"cost", func() ([]bench.Result, error) { return o.costs(ctx, withDB, results) }},
		{"rate", func() ([]bench.Result, error) { return o.eachTarget(ctx, withDB, results, []int{o.rate}, false) }},
		{"ramp", func() ([]bench.Result, error) { return o.eachTarget(ctx, withDB, results, o.rampRates(), true) }},
		{"retention", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return benchRetention(ctx, pool, dbURL, o, o.progress)
			})
		}},
		{"erasure", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return benchErasure(ctx, pool, dbURL, o, o.progress)
			})
		}},
		{"deliver", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return benchDeliver(ctx, pool, dbURL, o, o.progress)
			})
		}},
		{"flood-ack", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return benchFloodAck(ctx, pool, dbURL, o, o.progress)
			})
		}},
		{"flood", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return benchFlood(ctx, pool, dbURL, o, o.progress)
			})
		}},
		{"growth", func() ([]bench.Result, error) {
			return withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
				return one(benchGrowth(ctx, pool, dbURL, o, o.progress))
			})
		}},
	}
	for _, s := range steps {
		inCompare := s.mode != "rate" && s.mode != "retention" && s.mode != "erasure" && s.mode != "deliver" && s.mode != "growth" && s.mode != "flood-ack" && s.mode != "flood"
		if mode != s.mode && (mode != "compare" || !inCompare) {
			continue
		}
		fmt.Fprintf(o.progress, "== %s\n", s.mode)
		rs, err := s.run()
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// dbFunc runs a measurement on a database made afresh for it.
type dbFunc func(run func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error)) ([]bench.Result, error)

func (o benchOptions) rampRates() []int {
	var rates []int
	for r := o.rampStart; r <= o.rampMax; r += o.rampStep {
		rates = append(rates, r)
	}
	return rates
}

// drains stores a backlog of --events for each target and times the server
// processing it. River's variants first run once at each of --max-workers (mode
// drain-sweep) when there are several; then every target drains --repeat times at
// its fastest, the targets in a new random order each round (mode drain-run), and
// each target's runs are summarized (mode drain).
func (o benchOptions) drains(ctx context.Context, withDB dbFunc) ([]bench.Result, error) {
	var results []bench.Result
	once := func(t target, mode string) error {
		rs, err := withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
			r, err := o.drain(ctx, pool, dbURL, t)
			r.Mode = mode
			return []bench.Result{r}, err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(o.progress, "%s drain (workers %d): %.0f events/s\n", t.name, t.workers, rs[0].EventsPerSec)
		results = append(results, rs...)
		return nil
	}
	if len(o.riverWorkers) > 1 {
		for _, t := range o.targets {
			for _, w := range o.riverWorkers {
				if t.river != "" {
					t.workers = w
					if err := once(t, "drain-sweep"); err != nil {
						return results, err
					}
				}
			}
		}
	}
	for round := range o.repeat {
		for _, t := range o.shuffled(round) {
			if t.river != "" {
				t.workers = o.riverWorkers[0]
				if w := bench.BestWorkers(results, t.name); w > 0 {
					t.workers = w
				}
			}
			if err := once(t, "drain-run"); err != nil {
				return results, err
			}
		}
	}
	for _, t := range o.targets {
		var runs []bench.Result
		for _, r := range results {
			if r.Mode == "drain-run" && r.System == t.name {
				runs = append(runs, r)
			}
		}
		results = append(results, bench.SummarizeRuns("drain", runs))
	}
	return results, nil
}

// shuffled returns the targets in a random order for round (of --repeat), and says
// which: a fixed order would let one system always follow another's overload, or
// always take the machine's slow spells.
func (o benchOptions) shuffled(round int) []target {
	ts := slices.Clone(o.targets)
	rand.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	var names []string
	for _, t := range ts {
		names = append(names, t.name)
	}
	fmt.Fprintf(o.progress, "round %d of %d: %s\n", round+1, o.repeat, strings.Join(names, ", "))
	return ts
}

func (o benchOptions) drain(ctx context.Context, pool *pgxpool.Pool, dbURL string, t target) (bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return bench.Result{}, err
	}
	if err := bench.FillEvents(ctx, pool, o.events); err != nil {
		return bench.Result{}, err
	}
	if err := o.enqueueBacklog(ctx, t, dbURL); err != nil {
		return bench.Result{}, err
	}
	var srv *server
	defer func() {
		if srv != nil {
			srv.stop()
		}
	}()
	// The server's CPU counts from its start, which is part of the cost.
	meter, err := bench.NewCPUMeter(ctx, pool, 0)
	if err != nil {
		fmt.Fprintf(o.progress, "not measuring CPU: %v\n", err)
		meter = nil
	}
	r, err := bench.Drain(ctx, t.name, pool, o.events, meter, func() error {
		var err error
		srv, err = o.start(ctx, t, dbURL)
		if err == nil && meter != nil {
			meter.Follow(srv.pid)
		}
		return err
	}, t.jobs())
	if err != nil {
		return r, err
	}
	r.Workers = t.workers
	return r, nil
}

// eachTarget runs rates (a ramp: until a step misses the SLO) against each target,
// one server and database per target, the database emptied before each step. River runs at the
// MaxWorkers of its fastest drain in prior, if any, else the first of --max-workers.
func (o benchOptions) eachTarget(ctx context.Context, withDB dbFunc, prior []bench.Result, rates []int, ramp bool) ([]bench.Result, error) {
	var results []bench.Result
	for _, t := range o.targets {
		if t.river != "" {
			t.workers = o.riverWorkers[0]
			if w := bench.BestWorkers(prior, t.name); w > 0 {
				t.workers = w
			}
		}
		rs, err := withDB(func(dbURL string, pool *pgxpool.Pool) ([]bench.Result, error) {
			return o.rates(ctx, pool, dbURL, t, rates, ramp)
		})
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// label is the name t's results carry: with several processes, how many.
func (o benchOptions) label(t target) string {
	if o.processes > 1 {
		return fmt.Sprintf("%s ×%d", t.name, o.processes)
	}
	return t.name
}

func (o benchOptions) rates(ctx context.Context, pool *pgxpool.Pool, dbURL string, t target, rates []int, ramp bool) ([]bench.Result, error) {
	var bases []string
	var pids []int
	for range o.processes {
		srv, err := o.start(ctx, t, dbURL)
		if err != nil {
			return nil, err
		}
		defer srv.stop()
		bases, pids = append(bases, srv.base), append(pids, srv.pid)
	}
	meter, err := bench.NewCPUMeter(ctx, pool, pids...)
	if err != nil {
		fmt.Fprintf(o.progress, "not measuring CPU: %v\n", err)
		meter = nil
	}
	slo := o.slo
	if !ramp {
		slo = 1e12 // fixed rates: every one runs
	}
	return bench.Ramp(rates, slo, func(rate int) (bench.Result, error) {
		if err := bench.Reset(ctx, pool); err != nil {
			return bench.Result{}, err
		}
		r, err := bench.RunRate(ctx, bench.RateConfig{System: o.label(t), URL: bases[0], Others: bases[1:], Secret: benchSecret, Rate: rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: o.progress, CPU: meter, Jobs: t.jobs()})
		r.Workers = t.workers
		if err == nil {
			fmt.Fprintf(o.progress, "%s at %d/s: achieved %.0f/s, e2e p99 %v, errors %d\n", r.System, rate, r.AchievedRate, r.EndToEnd.P99, r.Errors)
		}
		return r, err
	})
}

// costs runs every target at each --cost-rates, --repeat times, the targets in a new
// random order each round (so that a slow spell of the machine does not fall on one
// system, nor one system always follow another), and reports each run (mode
// cost-run) and, per system and rate, their summary (bench.SummarizeRuns).
func (o benchOptions) costs(ctx context.Context, withDB dbFunc, prior []bench.Result) ([]bench.Result, error) {
	var runs []bench.Result
	for round := range o.repeat {
		oo := o
		oo.targets = o.shuffled(round)
		rs, err := oo.eachTarget(ctx, withDB, prior, o.costRates, false)
		for i := range rs {
			rs[i].Mode = "cost-run" // each run is in the JSON; the tables show the summaries
		}
		runs = append(runs, rs...)
		if err != nil {
			return runs, err
		}
	}
	results := runs
	for _, t := range o.targets {
		for _, rate := range o.costRates {
			var same []bench.Result
			for _, r := range runs {
				if r.System == o.label(t) && r.TargetRate == rate && r.CPU != nil {
					same = append(same, r)
				}
			}
			if len(same) > 0 {
				results = append(results, bench.SummarizeRuns("cost", same))
			}
		}
	}
	return results, nil
}

// riverNoop runs River's own no-op burn-down (river-bench noop) for --noop-jobs jobs.
func (o benchOptions) riverNoop(ctx context.Context, dbURL string) ([]bench.Result, error) {
	bin, err := lookPath("--river", o.river, "cd bench/river && go build -o ../../river-bench .")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "noop", "--database-url", dbURL, "--jobs", fmt.Sprint(o.noopJobs))
	cmd.Stderr = o.progress
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("river-bench noop: %w", err)
	}
	var rs []bench.Result
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("river-bench noop printed %q: %w", out, err)
	}
	return rs, nil
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
