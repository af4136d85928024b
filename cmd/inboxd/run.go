package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"inboxd/internal/api"
	"inboxd/internal/console"
	"inboxd/internal/delivery"
	"inboxd/internal/feed"
	"inboxd/internal/ingest"
	"inboxd/internal/privacy"
	"inboxd/internal/processor"
	"inboxd/internal/replay"
	"inboxd/internal/store"
	"inboxd/internal/tracing"
)

// command is one subcommand of inboxd.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the webhook receiver, processors and API (the default)", serveCmd},
		{"migrate", "create the database if missing and apply migrations; says which it applied", migrateCmd},
		{"check", "check what serve would start with, starting nothing: settings, providers, tokens, databases, schema", checkCmd},
		{"tail", "print each event as it arrives (LISTEN inbound_events): time, id, provider, external id, type", tailCmd},
		{"stats", "show the queue: events per state and the oldest of each (--watch to follow it)", statsCmd},
		{"conversations", "list conversations (--contact +1555…, --provider); `conversations show ID` one with its messages", conversationsCmd},
		{"events", "list events (--state dead, --provider); `events show ID` one in full; `events replay ID…|--state dead` requeues them", eventsCmd},
		{"erase", "erase everything held about a contact (--contact +1555…, --dry-run); prints the receipt", eraseCmd},
		{"export", "print everything held about a contact as one JSON document (--contact +1555…)", exportCmd},
		{"subscriptions", "outbound webhooks: list, create --url --types, show, update, deliveries --state dead, replay --from, rotate, ping, pause, resume, delete", subscriptionsCmd},
		{"redact", "show what the redaction policy does to a payload (--check), or rewrite stored payloads under it (--apply --before)", redactCmd},
		{"sign", "print a signed curl command that posts a webhook, to try an endpoint by hand", signCmd},
		{"version", "print this binary's version: module version, VCS revision, Go release", versionCmd},
		{"help", "list the commands", nil},
	}
}

// usageError is a mistake in how inboxd was called (an unknown command or flag, a bad
// value): main exits 2 for it, 1 for everything else.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// callerError is the usage error for err, which wraps a package's ErrBadRequest
// (sentinel): its reason alone, since "bad request" is the API's word for it.
func callerError(err, sentinel error) error {
	return usageError{errors.New(strings.TrimPrefix(err.Error(), sentinel.Error()+": "))}
}

// run dispatches the subcommand named by args[0]. Without one it serves (so that
// `go run ./cmd/inboxd` runs the service), and says on stderr where the others are.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "inboxd: serving (the same as `inboxd serve`); `inboxd help` lists the other commands")
		return serveCmd(ctx, args, getenv, stdout, stderr)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		printCommands(stdout)
		return nil
	case "-version", "--version":
		return versionCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	name := "serve"
	if args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	for _, c := range commands() {
		if c.name == name && c.run != nil {
			return c.run(ctx, args, getenv, stdout, stderr)
		}
	}
	return usageError{fmt.Errorf("unknown command %q%s; `inboxd help` lists the commands", name, didYouMean(name))}
}

// didYouMean names the commands a mistyped name was probably meant for: those it
// begins (conv: conversations) or that it begins with (event, statss), or "".
func didYouMean(name string) string {
	var near []string
	for _, c := range commands() {
		if c.run != nil && len(name) >= 2 && (strings.HasPrefix(c.name, name) || strings.HasPrefix(name, c.name)) {
			near = append(near, c.name)
		}
	}
	if len(near) == 0 {
		return ""
	}
	return "; did you mean " + strings.Join(near, " or ") + "?"
}

func printCommands(w io.Writer) {
	fmt.Fprintln(w, "usage: inboxd [command] [flags]")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n`inboxd COMMAND --help` lists a command's flags; every flag of serve is also an environment variable.")
}

// serveCmd is `inboxd serve`.
func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return serve(ctx, args, getenv, stdout, stderr, nil)
}

// serve runs inboxd. ready, when not nil, receives the listening address (tests).
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	cfg, err := loadConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stdout)
	if err != nil {
		return err
	}
	defer log.Sync()
	traces, err := tracing.Setup(ctx, getenv, log)
	if err != nil {
		return usageError{err}
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := traces.Shutdown(flushCtx); err != nil {
			log.Warn("flush traces", zap.Error(err))
		}
	}()

	pool, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := feed.CheckTransactionIDs(ctx, pool); errors.Is(err, feed.ErrForeignTransactionIDs) {
		log.Error("the change feed cannot move on this server", zap.Error(err))
	} else if err != nil {
		log.Warn("could not check the change feed's transaction ids", zap.Error(err))
	}
	// The processor has its own pool (processor.ConfigurePool): a backlog must never
	// take the connections webhooks need.
	procPool, err := store.Open(ctx, cfg.DatabaseURL, func(c *pgxpool.Config) {
		processor.ConfigurePool(c, cfg.Workers)
		watchStatements(c, log)
	})
	if err != nil {
		return dbAdvice(err)
	}
	defer procPool.Close()
	// The read API's pool: a replica's, when INBOX_READ_DATABASE_URL names one.
	readPool := pool
	if cfg.ReadURL != cfg.DatabaseURL {
		if readPool, err = store.Open(ctx, cfg.ReadURL, func(c *pgxpool.Config) { c.MaxConns = readConns }); err != nil {
			return dbAdvice(err)
		}
		defer readPool.Close()
	}

	// Ingest's committers have a pool of their own: the API's reads, an export or a
	// console page holding every connection of the main pool must not leave a webhook
	// waiting for one until it is answered 503 (TestAPIReadsCannotStarveIngest).
	ingestPool, err := store.Open(ctx, cfg.DatabaseURL, func(c *pgxpool.Config) {
		c.MaxConns = ingest.Connections
		watchStatements(c, log)
	})
	if err != nil {
		return dbAdvice(err)
	}
	defer ingestPool.Close()

	// Deliveries to subscribers have a pool of their own too: a slow endpoint's
	// backlog must not take connections from ingest or processing.
	deliveryPool, err := store.Open(ctx, cfg.DatabaseURL, func(c *pgxpool.Config) {
		c.MaxConns = deliveryConns
		watchStatements(c, log)
	})
	if err != nil {
		return dbAdvice(err)
	}
	defer deliveryPool.Close()

	checkRoom(ctx, cfg, log, pool, ingestPool, procPool, deliveryPool)
	svc := wire(cfg, pools{pool, ingestPool, procPool, readPool, deliveryPool}, traces, log)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (INBOX_ADDR): %w", cfg.Addr, err)
	}
	// At most INBOX_MAX_CONNECTIONS open at once: the next waits in the kernel's
	// backlog until one closes, so a crowd of idle or slow clients costs a bounded
	// number of goroutines and buffers.
	ln = netutil.LimitListener(ln, cfg.MaxConnections)
	log.Info("inboxd started", zap.String("version", buildVersion()), zap.String("addr", ln.Addr().String()), zap.Strings("providers", svc.providers),
		zap.Int("workers", cfg.Workers), zap.Int("batch_size", cfg.BatchSize))
	if len(svc.providers) == 0 {
		var hints []string
		for _, e := range cfg.Endpoints {
			hints = append(hints, e.Name+": "+e.Hint)
		}
		log.Warn("no provider is configured: every webhook answers 404; " + strings.Join(hints, "; "))
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}
	var adminLn net.Listener
	if svc.admin != nil {
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (INBOX_ADMIN_ADDR): %w", cfg.AdminAddr, err)
		}
		log.Info("readiness, metrics and admin endpoints on their own address", zap.String("admin_addr", adminLn.Addr().String()))
	}
	if cfg.DebugAddr != "" {
		go serveDebug(cfg.DebugAddr, log)
	}
	err = svc.run(ctx, ln, adminLn)
	log.Info("inboxd stopped")
	return err
}

// serveDebug serves pprof on its own listener, never on INBOX_ADDR: profiles expose
// internals and cost CPU, so they are opt-in and meant for a private address.
func serveDebug(addr string, log *zap.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	log.Info("pprof listening", zap.String("addr", addr))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof server", zap.Error(err))
	}
}

// maxHeaderBytes bounds a request's headers (Go's default is 1 MiB).
const maxHeaderBytes = 32 << 10

// service is inboxd's long-lived parts, wired.
type service struct {
	writer    *ingest.Writer
	proc      *processor.Processor
	eraser    *privacy.Eraser
	replays   *replay.Runner
	deliverer *delivery.Deliverer
	http      *http.Server
	admin     *http.Server // readiness, metrics and admin on INBOX_ADMIN_ADDR; nil: http serves them
	providers []string
	// stopGrace is how long requests in flight get at stop: enough for a webhook
	// waiting on its commit to hear the outcome. What is left after it is closed.
	stopGrace time.Duration
	log       *zap.Logger
}

// pools are the service's connection pools.
type pools struct {
	main, ingest, proc, read, delivery *pgxpool.Pool
}

// wire builds the parts: metrics, processor, deliverer, ingest writer and handlers,
// router. t.Provider is nil when tracing is off.
func wire(cfg config, ps pools, t *tracing.Traces, log *zap.Logger) *service {
	pool, procPool, readPool := ps.main, ps.proc, ps.read
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewBuildInfoCollector())
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "inbox_trace_spans_dropped_total",
		Help: "Spans left out of the export queue because it was full (the trace collector away or too slow).",
	}, func() float64 { return float64(t.Dropped()) }))
	traces := t.Provider
	changes := feed.NewHub()
	procID := processor.NewID()
	deliverer := delivery.New(ps.delivery, delivery.Config{
		Timeout: cfg.DeliveryTimeout, GiveUp: cfg.DeliveryGiveUp, AllowPrivate: cfg.DeliveryAllowPrivate,
		SweepInterval: cfg.SweepInterval, ID: procID, Tracing: traces,
	}, log.Named("delivery"), delivery.NewMetrics(reg))
	committed := func() { changes.Notify(); deliverer.Wake() }
	proc := processor.New(procPool, cfg.ListenURL, processor.Config{
		Workers: cfg.Workers, BatchSize: cfg.BatchSize, BatchWait: cfg.BatchWait, MaxAttempts: cfg.MaxAttempts,
		LaneWeights: cfg.LaneWeights, Lease: cfg.Lease, SweepInterval: cfg.SweepInterval, Retention: cfg.Retention, DeadRetention: cfg.DeadRetention,
		Tracing: traces, PollOnly: cfg.PollOnly, Also: map[string]func(){feed.Channel: committed}, ID: procID,
	}, log.Named("processor"), processor.NewMetrics(reg))
	// Ingest wakes this process's workers after each commit, without waiting for its
	// own NOTIFY to come back from the database.
	writer := ingest.NewWriter(ps.ingest, log.Named("ingest"), ingest.NewMetrics(reg),
		ingest.WriterConfig{Timeout: cfg.IngestTimeout, CommitWait: cfg.CommitWait, OnCommit: proc.Committed, Handoff: proc.Handoff(), SettingName: settingName})
	hooks := ingest.NewHandlers(ingest.Config{
		Endpoints: cfg.Endpoints, MaxBodyBytes: int64(cfg.MaxBodyBytes), BodyMemory: int64(cfg.BodyMemory), ReadTimeout: cfg.ReadTimeout,
		MaxInFlight: cfg.MaxInFlight, Tracing: traces, SettingName: settingName, Redaction: cfg.Redaction,
	}, writer, log.Named("ingest"))
	eraser := privacy.NewEraser(pool, log.Named("privacy"), cfg.Redaction, proc.ID())
	replays := replay.NewRunner(pool, log.Named("replay"), proc.ID())
	deps := api.Deps{
		Eraser: eraser, Changes: changes, Redaction: cfg.Redaction,
		Deliveries: &api.Deliveries{AllowPrivate: cfg.DeliveryAllowPrivate, Wake: deliverer.Wake, Ping: deliverer.Ping},
		Pool:       pool, ReadPool: readPool, PollOnly: cfg.PollOnly, Webhooks: hooks, Listening: proc.ListenerConnected, Gatherer: reg,
		APITokens: cfg.APITokens, AdminTokens: cfg.AdminTokens, Log: log.Named("http"), Tracing: traces,
		Misconfigured: func() error {
			return errors.Join(store.Misconfigured(pool), store.Misconfigured(ps.ingest), store.Misconfigured(procPool))
		},
		SettingName: settingName, TrustTraceparent: cfg.TrustTraceparent,
	}
	deps.Readiness = api.NewReadiness(deps)
	deps.Console = console.New(console.Config{Pool: pool, AdminTokens: cfg.AdminTokens, ReadTokens: cfg.ConsoleReadTokens,
		TraceURL: cfg.ConsoleTraceURL, Health: deps.Readiness.Check, Version: buildVersion(), Changes: changes.Next, Redaction: cfg.Redaction,
		Retention: cfg.Retention, DeadRetention: cfg.DeadRetention, WakeReplays: replays.Wake,
		WakeDeliveries: deliverer.Wake, Ping: deliverer.Ping, AllowPrivate: cfg.DeliveryAllowPrivate, Eraser: eraser, Log: log.Named("console")})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "inbox_ready",
		Help: "1 when /readyz would answer 200 (database reachable, webhooks being committed, LISTEN connected), else 0; sampled at each scrape.",
	}, func() float64 {
		if ok, _ := deps.Readiness.Check(context.Background()); ok {
			return 1
		}
		return 0
	}))
	router, internal := api.NewRouter(deps), http.Handler(nil)
	if cfg.AdminAddr != "" {
		router, internal = api.NewRouters(deps)
	}
	// Nothing a client does holds a connection for ever: its headers must arrive within
	// the read timeout, and the whole request too on every route (webhook bodies get a
	// deadline of their own from the handler, see ingest: headers, then body, each
	// within the read timeout); no response may take longer to write than the longest a
	// webhook can legitimately take (body, then commit) plus a margin, and the /v1
	// handlers time out sooner. Headers are capped at 32 KiB (431 beyond): no provider
	// sends more than a few, and a header is read before anyone is authenticated.
	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: cfg.ReadTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout + cfg.IngestTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	s := &service{writer: writer, proc: proc, eraser: eraser, replays: replays, deliverer: deliverer, http: srv, providers: hooks.Enabled(),
		stopGrace: cfg.IngestTimeout + time.Second, log: log}
	if internal != nil {
		s.admin = &http.Server{ // the same limits: operators' requests are small too
			Handler: internal, ReadHeaderTimeout: srv.ReadHeaderTimeout, ReadTimeout: srv.ReadTimeout,
			WriteTimeout: srv.WriteTimeout, IdleTimeout: srv.IdleTimeout, MaxHeaderBytes: srv.MaxHeaderBytes,
		}
	}
	return s
}

// erasurePoll is how often a process looks for erasures and bulk replays another one
// left unfinished (it died); those it accepts itself start at once.
const erasurePoll = 30 * time.Second

// run serves on ln until ctx ends, then stops in order: HTTP first (no new requests;
// in-flight ones finish, and so does the commit they wait for), then the writer,
// while the processor finishes or releases its batches. Shutdown gets a fresh
// deadline: ctx is already cancelled by then.
func (s *service) run(ctx context.Context, ln, adminLn net.Listener) error {
	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.writer.Run(writerCtx) })
	g.Go(func() error { return s.proc.Run(gctx) })
	g.Go(func() error { s.eraser.Work(gctx, erasurePoll); return nil })
	g.Go(func() error { s.replays.Work(gctx, erasurePoll); return nil })
	g.Go(func() error { return s.deliverer.Run(gctx) })
	g.Go(func() error {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	if s.admin != nil {
		g.Go(func() error {
			if err := s.admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin http server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stopHTTP(ctx)
		stopWriter()
		return nil
	})
	return g.Wait()
}

// stopHTTP stops accepting, lets requests in flight finish within stopGrace, and then
// closes whatever is left (a client stalling its body, say): none of those was
// acknowledged, so closing them loses nothing, and the stop is still a clean one.
func (s *service) stopHTTP(ctx context.Context) {
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.stopGrace)
	defer cancel()
	if s.admin != nil {
		go s.admin.Shutdown(shutdownCtx) // nothing there waits on a commit
	}
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("requests still open at the stop deadline were closed", zap.Duration("grace", s.stopGrace), zap.Error(err))
		_ = s.http.Close()
	}
	if s.admin != nil {
		_ = s.admin.Close()
	}
}

// openDatabase creates and migrates the database (unless INBOX_MIGRATE=false) and
// opens the pool.
func openDatabase(ctx context.Context, cfg config, log *zap.Logger) (*pgxpool.Pool, error) {
	if cfg.Migrate {
		// Migrations hold a session (tern's advisory lock, SET): the direct connection.
		if err := store.EnsureDatabase(ctx, cfg.ListenURL); err != nil {
			return nil, dbAdvice(err)
		}
		applied, err := store.Migrate(ctx, cfg.ListenURL)
		switch {
		case errors.Is(err, store.ErrNewerSchema):
			log.Warn("running on a newer schema (a rollout in progress, or this binary rolled back)", zap.Error(err))
		case err != nil:
			return nil, dbAdvice(err)
		default:
			log.Info("database schema current", zap.Strings("applied_migrations", applied))
		}
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, func(pc *pgxpool.Config) {
		pc.MaxConns = mainConns
		watchStatements(pc, log)
	})
	if err != nil {
		return nil, dbAdvice(err)
	}
	return pool, nil
}

// The connections each of serve's pools may open, besides ingest's
// (ingest.Connections) and the processor's (processor.PoolSize);
// docs/configuration.md counts them.
const (
	mainConns     = 14 // the API, the console, erasures and replays
	deliveryConns = 4  // each held for a claim or a finish of a few milliseconds
	readConns     = 8  // on INBOX_READ_DATABASE_URL's server, when it names one
)

// connections is how many connections serve may open on DATABASE_URL's server: its
// pools there and the LISTEN connection.
func connections(cfg config) int {
	n := mainConns + ingest.Connections + processor.PoolSize(cfg.Workers) + deliveryConns
	if !cfg.PollOnly {
		n++
	}
	return n
}

// roomAdvice is what to do when the server has no room for a process's connections.
const roomAdvice = "lower INBOX_WORKERS (a connection each) or raise the server's max_connections (docs/configuration.md counts them)"

// checkRoom warns when the pools on DATABASE_URL (and the listener, on the same
// server) may open more connections than the server has room for: the pools open
// them as they are needed, so such a process starts well and fails later, when a
// backlog or a burst opens the rest. Behind a pooler (INBOX_LISTEN_DATABASE_URL
// set) the pooler's own pool size is what counts, and the check is skipped.
func checkRoom(ctx context.Context, cfg config, log *zap.Logger, pools ...*pgxpool.Pool) {
	if cfg.ListenURL != cfg.DatabaseURL {
		return
	}
	want, ours := connections(cfg), 0
	for _, p := range pools {
		ours += int(p.Stat().TotalConns()) // the listener is not connected yet
	}
	r, err := store.ReadRoom(ctx, pools[0])
	if err != nil {
		log.Warn("could not check the server's max_connections", zap.Error(err))
		return
	}
	if short := r.Short(want, ours); short != "" {
		log.Warn("the database server may run out of connections: "+short+
			"; under load claims and webhooks would then fail (too many clients); "+roomAdvice,
			zap.Int("connections", want), zap.Int("server_limit", r.Limit), zap.Int("server_open", r.Open), zap.Int("workers", cfg.Workers))
	}
}

// watchStatements makes a pool of DATABASE_URL say, once a minute while it lasts,
// that a transaction-mode pooler is losing its prepared statements, and how to fix
// it; /readyz reports it too (store.Misconfigured).
func watchStatements(c *pgxpool.Config, log *zap.Logger) {
	store.WatchStatements(c, func(err error) {
		log.Error("DATABASE_URL is misconfigured: "+store.ErrPoolerMisconfigured.Error(), zap.Error(err))
	})
}

// dbAdvice adds what to do when no server answered, or the database is not set up.
func dbAdvice(err error) error {
	switch {
	case errors.Is(err, store.ErrUnreachable):
		return fmt.Errorf("%w; start one with `docker compose up -d db`, or set DATABASE_URL to a reachable server", err)
	case store.IsMissingDatabase(err), store.IsUnmigrated(err):
		return fmt.Errorf("%w; create the database and its tables with `inboxd migrate` (`inboxd serve` also does at start)", err)
	}
	return err
}

func newLogger(cfg config, out io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(encCfg)
	if cfg.LogFormat == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(out), level)), nil
}
