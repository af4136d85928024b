// Package processor turns stored inbound events into conversations and messages.
//
// Tables: it changes inbound_events' state columns (never payloads) and owns
// conversations, messages and pending_statuses.
//
// How an event flows, and which transaction commits what:
//
//  1. Claim (its own short transaction, committed at once): due pending rows become
//     processing, attempts+1, leased until now+INBOX_LEASE. Committing the attempt
//     before any work is done is what makes a poison event that kills its process
//     run out of attempts instead of crash-looping the service.
//  2. Apply (one transaction per batch, sent as one pipelined batch: session.go): the
//     messages and statuses of every event, set-based (apply.go), and then every
//     event's outcome (processed, pending with backoff, dead). Work and outcome commit
//     together: an event is processed exactly when its rows exist. If the batch fails
//     as a whole, its events are applied one by one, each in a savepoint, so that one
//     bad event costs only itself.
//  3. If the process dies before 2 is sent, the rows stay processing until the lease
//     ends, then the sweep rescues them one at a time (an event that killed a process
//     can only take itself down again), or, at INBOX_MAX_ATTEMPTS, declares them dead.
//     If it dies after 2 was sent (commit included), the server may still commit it:
//     the same as dying right after a COMMIT. Applying is idempotent and outcomes are
//     fenced (queue.go), so an event applied twice (a lease that expired while its
//     holder was merely slow) leaves the same rows and one outcome.
//
// Wake-ups: the LISTEN connection (listen.go), this process's own ingest commits
// (Wake), the sweep and retry timers all signal one channel of capacity 1, so a burst
// of thousands of notifications collapses into a few claims; see work for how a
// wake-up that arrives mid-claim is never lost, and how concurrency follows the
// backlog.
package processor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"inboxd/internal/store"
)

// Config tunes a Processor. Zero values take the defaults (docs/configuration.md),
// except Retention and DeadRetention, where 0 keeps everything.
type Config struct {
	Workers         int           // concurrent batches in this process
	BatchSize       int           // events claimed and applied per transaction
	MaxAttempts     int           // attempts before an event is dead
	Lease           time.Duration // how long a claim is held before others may take it over
	SweepInterval   time.Duration // period of the sweep (jittered ±10%)
	ShutdownTimeout time.Duration // how long in-flight batches may finish at stop
	ID              string        // this process's name in locked_by
	// Retention and DeadRetention: processed (and parked statuses) and dead events
	// older than these are deleted (retention.go); 0 keeps them.
	Retention     time.Duration
	DeadRetention time.Duration
	// Normalizers maps provider names to their Normalizer; nil means
	// registry.Normalizers(). Tests replace it to inject failures.
	Normalizers map[string]provider.Normalizer
	// Tracing makes the spans of processing (trace.go); nil: none.
	Tracing trace.TracerProvider
	// PollOnly runs no LISTEN connection: the sweep (and this process's own ingest
	// commits, through Committed) drive processing, for a database that only a
	// transaction-mode pooler can reach.
	PollOnly bool
	// BatchWait spaces the claims that notifications cause: after a claim that did
	// not fill its batch, the next waits until BatchWait after it, unless a batch's
	// worth of events was announced meanwhile (see gather). This process's own commits
	// (Committed) are claimed at once. 0 claims at once; DefaultBatchWait is the
	// service's default.
	BatchWait time.Duration
	// LaneWeights weighs lanes' shares of a claim (INBOX_LANE_WEIGHTS,
	// ParseLaneWeights); a lane not listed weighs 1.
	LaneWeights map[string]int
	// Also are other channels the LISTEN connection listens on, each with what to
	// call on its notifications and whenever the connection is (re)established
	// (anything may have been missed): the change feed's (internal/feed).
	Also map[string]func()
}

// The defaults of Config (and of the service's settings, docs/configuration.md).
const (
	DefaultBatchSize       = 64
	DefaultMaxAttempts     = 12
	DefaultLease           = 30 * time.Second
	DefaultSweepInterval   = time.Second
	DefaultShutdownTimeout = 10 * time.Second
)

// The bounds of the service's settings (cmd/inboxd refuses a value beyond them).
const (
	// MinLease: a lease is also the statement_timeout of the processor's statements
	// (settings), so a shorter one times out ordinary claims and applies, and nothing
	// is ever processed.
	MinLease = time.Second
	// MaxBatchSize: a batch's payloads are held in memory together (up to
	// INBOX_MAX_BODY_BYTES each), once per worker; beyond a few hundred events a
	// batch saves nothing more per event (docs/benchmarks.md).
	MaxBatchSize = 1000
)

// DefaultWorkers is the default of Config.Workers: four batches per CPU the process
// may use, since a batch spends most of its time waiting on the database. The CPUs
// are GOMAXPROCS's, which Go sets from a container's CPU limit, where NumCPU counts
// the host's: a container limited to two CPUs on a 64-core host gets 8 workers, not
// 256 (each a connection).
func DefaultWorkers() int { return 4 * runtime.GOMAXPROCS(0) }

// DefaultBatchWait is INBOX_BATCH_WAIT's default: events that other processes commit
// (or that a replay requeues) wait at most this long to share a claim with others.
// An event after a quiet spell is claimed at once.
const DefaultBatchWait = 10 * time.Millisecond

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers()
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.Normalizers == nil {
		c.Normalizers = registry.Normalizers()
	}
	if c.Tracing == nil {
		c.Tracing = noop.NewTracerProvider()
	}
}

// NewID is a process's name in locked_by: host, pid and a random suffix (a pid is
// reused after a restart, and in containers every process is pid 1).
func NewID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%04x", host, os.Getpid(), rand.N(1<<16))
}

// ConfigurePool sizes a pool for the processor (PoolSize). (Its settings are per
// transaction: session.go.)
func ConfigurePool(c *pgxpool.Config, workers int) {
	c.MaxConns = int32(PoolSize(workers))
}

// PoolSize is the processor's pool for workers: a connection for every worker, plus
// the handoff's own worker, the sweep and retention.
func PoolSize(workers int) int { return workers + 3 }

// Processor claims and applies events. Run it; call Wake after committing events.
type Processor struct {
	pool    *pgxpool.Pool
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	wake    chan struct{} // capacity 1: a pending signal covers any that arrive
	peer    chan struct{} // capacity 1: a full batch asks one more worker to claim
	changed chan struct{} // capacity 1: changes were committed (notifyChanges)
	active  atomic.Int32  // workers in their claim loop
	pending atomic.Bool   // a wake-up arrived since the last claim began
	// gather's state: when the last claim began (unix ns), how many events were
	// announced by notification since, and a signal to claim without waiting more.
	claimedAt atomic.Int64
	notified  atomic.Int64
	claimNow  chan struct{} // capacity 1
	listener  *listener
	lanes     *laneRound // the round of lanes claims go through (lanes.go)
	handoff   *Handoff   // events this process's ingest committed claimed (handoff.go)
	rollup    rollup     // the per-minute counts for the console (rollup.go)
	tracer    trace.Tracer
	settings  string // the settings of every transaction (session.go)
	// afterClaim, when set (tests only), runs after each claim pass with the number
	// of events claimed, before the worker decides whether to go idle.
	afterClaim func(n int)
	// beforeIdle, when set (tests only), runs when a worker has decided to go idle,
	// just before it counts itself out.
	beforeIdle func()
}

// New returns a Processor on pool. listenURL is the connection string for the
// dedicated LISTEN connection: a direct one, never through a transaction-mode pooler
// (INBOX_LISTEN_DATABASE_URL, by default DATABASE_URL).
func New(pool *pgxpool.Pool, listenURL string, cfg Config, log *zap.Logger, m *metrics) *Processor {
	cfg.setDefaults()
	p := &Processor{pool: pool, cfg: cfg, log: log, metrics: m, wake: make(chan struct{}, 1), peer: make(chan struct{}, 1), changed: make(chan struct{}, 1),
		claimNow: make(chan struct{}, 1), tracer: cfg.Tracing.Tracer("inboxd/processor"), settings: settings(cfg.Lease),
		lanes: newLaneRound(cfg.LaneWeights)}
	p.handoff = newHandoff(cfg.ID, cfg.Lease, handoffLimit(cfg.BatchSize))
	p.handoff.release = p.releaseAdopted
	p.listener = newListener(listenURL, p.notify, p.Wake, log, m)
	p.listener.also = cfg.Also
	if cfg.PollOnly {
		m.pollOnly.Set(1) // no LISTEN connection by design; the listener gauge stays 0
	}
	m.retention.WithLabelValues("processed_events").Set(cfg.Retention.Seconds())
	m.retention.WithLabelValues("dead_events").Set(cfg.DeadRetention.Seconds())
	return p
}

// ChangesChannel is the channel on which processes hear that changes were committed
// to the change feed (internal/feed).
const ChangesChannel = "inbox_changes"

// notifyChanges sends NOTIFY inbox_changes after batches that processed events
// committed (changesCommitted), in a transaction of its own: in the apply transaction
// it would make that commit wait for the server-wide notification lock, which
// ingest's commits hold while they flush the WAL. Signals that arrive while one is
// sent are coalesced into the next. This process's own listeners are called at once.
func (p *Processor) notifyChanges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.changed:
		}
		if f := p.cfg.Also[ChangesChannel]; f != nil {
			f()
		}
		if _, err := p.pool.Exec(ctx, notifyChangesSQL); err != nil && ctx.Err() == nil {
			p.log.Warn("notify of new changes failed; long polls elsewhere see them at their next recheck", zap.Error(err))
		}
	}
}

// notifyChangesSQL has no parameter, so that its prepared plan is generic without the
// processor's settings (session.go).
const notifyChangesSQL = "SELECT pg_notify('" + ChangesChannel + "', '')"

// ID is this process's name in locked_by (and in the leases of other work it runs).
func (p *Processor) ID() string { return p.cfg.ID }

// Wake asks the workers for a claim pass. It never blocks. While a worker is claiming
// it only sets pending, which that worker checks before it goes idle (work); only
// when none is does it wake an idle one. A notification per event thus costs no
// goroutine switch while a claimer is busy.
func (p *Processor) Wake() {
	p.pending.Store(true)
	if p.active.Load() == 0 {
		signal(p.wake)
	}
}

// Handoff is where this process's ingest hands committed events straight to the
// workers (handoff.go).
func (p *Processor) Handoff() *Handoff { return p.handoff }

// Committed tells the processor that this process's ingest just committed n events.
// A commit already gathered its events (ingest's INBOX_COMMIT_WAIT), so they are
// claimed at once, with no BatchWait. It never blocks.
func (p *Processor) Committed(n int) {
	signal(p.claimNow)
	p.Wake()
}

// notify handles one notification: an event committed by another process (or this
// one's: see listener), counted for gather.
func (p *Processor) notify() {
	if p.notified.Add(1) >= int64(p.cfg.BatchSize) {
		signal(p.claimNow)
	}
	p.Wake()
}

// ListenerConnected reports whether the LISTEN connection is up (for /readyz); with
// PollOnly there is none to be up, and it reports true.
func (p *Processor) ListenerConnected() bool { return p.cfg.PollOnly || p.listener.connected.Load() }

// Run processes events until ctx ends, then stops claiming, lets in-flight batches
// finish within ShutdownTimeout and releases what did not finish.
func (p *Processor) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if !p.cfg.PollOnly {
		g.Go(func() error { return p.listener.run(ctx) })
	}
	g.Go(func() error { p.sweep(ctx); return nil })
	g.Go(func() error { p.retain(ctx); return nil })
	g.Go(func() error { p.notifyChanges(ctx); return nil })
	g.Go(func() error { p.keepRollup(ctx); return nil })
	for range p.cfg.Workers {
		g.Go(func() error { p.work(ctx); return nil })
	}
	g.Go(func() error { p.serveHandoff(ctx); return nil })
	p.Wake() // whatever is already due
	err := g.Wait()
	p.handoff.close()
	p.lastRollup()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// work is one worker. Concurrency follows the backlog, not the wake-ups:
//   - One worker at a time claims in a loop: claim, apply, and claim again if a
//     wake-up arrived since the claim began (what arrived meanwhile: the trailing
//     edge), until one did not.
//   - A batch that comes back full means a backlog: the worker claims again at once
//     and signals peer, and one more worker joins, up to a quarter of the workers
//     (claimers).
//   - A wake-up that arrives while a claimer is active only sets pending; the claimer
//     checks pending before it goes idle, so the wake-up is never lost. pending is
//     cleared just before each claim: a wake-up after that is for an event the claim
//     may not see, and its claimer looks again.
//
// Under light load that is one claimer and small batches, a few milliseconds behind
// the commits (gather). Under heavy load each claim finds more waiting, so batches
// grow and the per-transaction cost is shared by more events. Waking a worker per
// commit instead had eight workers applying tiny batches side by side on two cores,
// paying the fixed cost of a batch per handful of events and contending for the same
// locks.
//
// Batches from the handoff (events this process's ingest committed claimed) need no
// claim: an idle worker, or the handoff's own (serveHandoff), takes one as it comes,
// and a claimer takes any that wait before each claim, so that they do not queue
// behind a backlog.
func (p *Processor) work(ctx context.Context) {
	for {
		adopted, ok := p.await(ctx)
		if !ok {
			return
		}
		if adopted != nil {
			p.processAdopted(ctx, adopted)
			continue
		}
		p.claimLoop(ctx)
	}
}

// claimLoop claims until no wake-up is left (see work); the worker is counted active.
func (p *Processor) claimLoop(ctx context.Context) {
	for full := false; ; {
		if b := p.handoff.take(nil, p.cfg.BatchSize); b != nil {
			p.processAdopted(ctx, b)
		}
		if !full {
			p.gather(ctx)
		}
		p.claiming()
		n, err := p.runBatch(ctx)
		if p.afterClaim != nil {
			p.afterClaim(n)
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("processing pass", zap.Error(err))
			store.ResetOnReadOnly(p.pool, err) // a failover: find the new primary
			sleep(ctx, time.Second)            // the database is in trouble: do not spin
		}
		if full = n >= p.cfg.BatchSize; full && int(p.active.Load()) < claimers(p.cfg.Workers) {
			signal(p.peer) // a backlog: bring a peer along
		}
		if (full || p.pending.Load()) && ctx.Err() == nil {
			continue
		}
		if p.beforeIdle != nil {
			p.beforeIdle()
		}
		p.active.Add(-1)
		if !p.pending.Swap(false) || ctx.Err() != nil {
			break
		}
		p.active.Add(1) // a wake-up came while this worker was going idle
	}
}

// claimers is how many workers claim at once at most: a quarter of them (two of the
// default eight on two cores). A backlog's drain keeps that many transactions busy,
// which takes the CPUs (on two cores two drain as fast as eight:
// docs/benchmarks.md), and leaves the other workers, and the handoff's, to apply
// what arrives meanwhile without queueing behind the backlog for the CPU.
func claimers(workers int) int { return max(1, (workers+3)/4) }

// gather waits before a claim so that one transaction carries several events rather
// than one each: until BatchWait after the previous claim began, or until claimNow
// (this process committed events, or a batch's worth was announced), whichever comes
// first. An event that arrives after a quiet spell (no claim within BatchWait) is
// claimed at once, so the wait costs latency only where events come close together,
// and then at most BatchWait. It is Kafka's linger.ms, and Postgres' commit_delay,
// for claims: a claim and an apply cost about the same for one event as for ten
// (docs/benchmarks.md).
func (p *Processor) gather(ctx context.Context) {
	if p.cfg.BatchWait <= 0 {
		return
	}
	if d := time.Until(time.Unix(0, p.claimedAt.Load()).Add(p.cfg.BatchWait)); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-p.claimNow:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// claiming resets, just before a claim, what wake-ups and arrivals are counted from:
// those that come after it are for events this claim may not see.
func (p *Processor) claiming() {
	p.pending.Store(false)
	p.claimedAt.Store(time.Now().UnixNano())
	p.notified.Store(0)
	select {
	case <-p.claimNow: // for events this claim will see
	default:
	}
}

// await blocks until this worker should claim, and counts it active, or until a
// batch comes from the handoff, which it returns. It returns false when ctx ends.
func (p *Processor) await(ctx context.Context) ([]claimed, bool) {
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case b := <-p.handoff.ch:
			p.handoff.got(b)
			return p.handoff.take(b, p.cfg.BatchSize), true
		case <-p.peer:
		case <-p.wake:
			p.pending.Store(true)
			if p.active.Load() > 0 {
				continue // the active claimer will see pending
			}
			p.pending.Store(false)
		}
		p.active.Add(1)
		return nil, true
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// runBatch claims and applies one batch; it returns how many events it claimed.
func (p *Processor) runBatch(ctx context.Context) (int, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	start := time.Now()
	events, err := p.claim(ctx, p.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	if len(events) == 0 {
		p.metrics.claims.WithLabelValues("empty").Inc()
		return 0, nil
	}
	p.metrics.claims.WithLabelValues("events").Inc()
	ctx, span := p.startBatch(ctx, events, start)
	defer span.End()
	light, backlog := splitBacklog(events, p.cfg.BatchSize)
	if len(light) > 0 {
		err = p.process(ctx, light)
	}
	if len(backlog) > 0 {
		err = errors.Join(err, p.process(ctx, backlog))
	}
	return len(events), err
}

// splitBacklog separates a full claim's events of a lane with a backlog (one lane
// holding at least half of the claim) from the other lanes' events, which are
// applied first, in a small transaction of their own: in a batch with the backlog's
// they would wait for its whole apply.
func splitBacklog(events []claimed, batchSize int) (light, backlog []claimed) {
	if len(events) < batchSize {
		return events, nil
	}
	counts := map[string]int{}
	busiest := ""
	for _, e := range events {
		counts[e.Lane]++
		if counts[e.Lane] > counts[busiest] {
			busiest = e.Lane
		}
	}
	if 2*counts[busiest] < len(events) {
		return events, nil
	}
	for _, e := range events {
		if e.Lane == busiest {
			backlog = append(backlog, e)
		} else {
			light = append(light, e)
		}
	}
	return light, backlog
}

// sweep wakes the workers every SweepInterval (jittered, so that several processes
// spread out), rescues expired leases and samples the queue depth.
func (p *Processor) sweep(ctx context.Context) {
	// Sample the depth at once: a scrape right after start should see the queue.
	lastDepth := time.Now()
	if err := p.updateQueueDepth(ctx); err != nil && ctx.Err() == nil {
		p.log.Warn("sample queue depth", zap.Error(err))
	}
	if err := p.updateLanes(ctx); err != nil && ctx.Err() == nil {
		p.log.Warn("sample lanes", zap.Error(err))
	}
	for {
		jitter := time.Duration(rand.Int64N(int64(p.cfg.SweepInterval)/5+1)) - p.cfg.SweepInterval/10
		if !sleep(ctx, p.cfg.SweepInterval+jitter) {
			return
		}
		p.Wake()
		if err := p.rescueAll(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rescue expired leases", zap.Error(err))
		}
		if time.Since(lastDepth) >= 5*time.Second {
			lastDepth = time.Now()
			if err := p.updateQueueDepth(ctx); err != nil && ctx.Err() == nil {
				p.log.Warn("sample queue depth", zap.Error(err))
			}
			if err := p.updateLanes(ctx); err != nil && ctx.Err() == nil {
				p.log.Warn("sample lanes", zap.Error(err))
			}
		}
	}
}

// rescueAll takes over expired leases one at a time until none is left.
func (p *Processor) rescueAll(ctx context.Context) error {
	for ctx.Err() == nil {
		start := time.Now()
		events, err := p.rescue(ctx)
		if err != nil || len(events) == 0 {
			return err
		}
		ev := events[0]
		if ev.State == "dead" {
			p.metrics.processed.WithLabelValues(ev.Provider, "dead").Inc()
			p.log.Error("event dead: out of attempts after its process stopped mid-work",
				zap.Int64("event_id", ev.ID), zap.String("provider", ev.Provider), zap.Int("attempt", ev.Attempts))
			continue
		}
		p.log.Warn("took over expired lease", zap.Int64("event_id", ev.ID),
			zap.String("provider", ev.Provider), zap.Int("attempt", ev.Attempts))
		bctx, span := p.startBatch(ctx, events, start)
		err = p.process(bctx, events)
		span.End()
		if err != nil {
			return err
		}
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
