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
//  2. Apply (one transaction per batch): the messages and statuses of every event, each
//     inside a savepoint so that one failing event rolls back only itself, and then
//     every event's outcome (processed, pending with backoff, dead). Work and outcome
//     commit together: an event is processed exactly when its rows exist.
//  3. If the process dies between 1 and 2's commit, transaction 2 rolls back; the rows
//     stay processing until the lease ends, then the sweep rescues them one at a time
//     (an event that killed a process can only take itself down again), or, at
//     INBOX_MAX_ATTEMPTS, declares them dead. Applying is idempotent, so an event
//     applied twice (a lease that expired while its holder was merely slow) leaves
//     the same rows.
//
// Wake-ups: the LISTEN connection (listen.go), this process's own ingest commits
// (Wake), the sweep and retry timers all signal one channel of capacity 1. A signal
// that arrives while workers are busy waits there, so the next pass runs (no lost
// wake-up), and a burst of thousands of notifications collapses into a few claims.
package processor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Config tunes a Processor. Zero values take the defaults of SPEC §2.
type Config struct {
	Workers         int           // concurrent batches in this process
	BatchSize       int           // events claimed and applied per transaction
	MaxAttempts     int           // attempts before an event is dead
	Lease           time.Duration // how long a claim is held before others may take it over
	SweepInterval   time.Duration // period of the sweep (jittered ±10%)
	ShutdownTimeout time.Duration // how long in-flight batches may finish at stop
	ID              string        // this process's name in locked_by
	// Normalizers maps provider names to their Normalizer; nil means
	// DefaultNormalizers. Tests replace it to inject failures.
	Normalizers map[string]Normalizer
}

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 64
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 12
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s/%d/%04x", host, os.Getpid(), rand.N(1<<16))
	}
	if c.Normalizers == nil {
		c.Normalizers = DefaultNormalizers()
	}
}

// Processor claims and applies events. Run it; call Wake after committing events.
type Processor struct {
	pool     *pgxpool.Pool
	cfg      Config
	log      *zap.Logger
	metrics  *metrics
	wake     chan struct{} // capacity 1: a pending signal covers any that arrive
	listener *listener
}

// New returns a Processor on pool. listenURL is the connection string for the
// dedicated LISTEN connection (normally DATABASE_URL).
func New(pool *pgxpool.Pool, listenURL string, cfg Config, log *zap.Logger, m *metrics) *Processor {
	cfg.setDefaults()
	p := &Processor{pool: pool, cfg: cfg, log: log, metrics: m, wake: make(chan struct{}, 1)}
	p.listener = newListener(listenURL, p.Wake, log, m)
	return p
}

// Wake asks the workers for a claim pass. It never blocks.
func (p *Processor) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// ListenerConnected reports whether the LISTEN connection is up (for /readyz).
func (p *Processor) ListenerConnected() bool { return p.listener.connected.Load() }

// Run processes events until ctx ends, then stops claiming, lets in-flight batches
// finish within ShutdownTimeout and releases what did not finish.
func (p *Processor) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.listener.run(ctx) })
	g.Go(func() error { p.sweep(ctx); return nil })
	for range p.cfg.Workers {
		g.Go(func() error { p.work(ctx); return nil })
	}
	p.Wake() // whatever is already due
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// work is one worker: claim a batch, apply it, repeat while batches come back full,
// then sleep until woken.
func (p *Processor) work(ctx context.Context) {
	for {
		n, err := p.runBatch(ctx)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("processing pass", zap.Error(err))
			sleep(ctx, time.Second) // the database is in trouble: do not spin
		}
		if n == p.cfg.BatchSize {
			p.Wake() // likely more: bring a peer along, and go again
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
	}
}

// runBatch claims and applies one batch; it returns how many events it claimed.
func (p *Processor) runBatch(ctx context.Context) (int, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	events, err := p.claim(ctx, p.cfg.BatchSize)
	if err != nil || len(events) == 0 {
		return 0, err
	}
	return len(events), p.process(ctx, events)
}

// sweep wakes the workers every SweepInterval (jittered, so that several processes
// spread out), rescues expired leases and samples the queue depth.
func (p *Processor) sweep(ctx context.Context) {
	lastDepth := time.Time{}
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
		}
	}
}

// rescueAll takes over expired leases one at a time until none is left.
func (p *Processor) rescueAll(ctx context.Context) error {
	for ctx.Err() == nil {
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
		if err := p.process(ctx, events); err != nil {
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
