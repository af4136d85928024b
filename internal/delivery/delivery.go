// Package delivery sends the change feed (internal/feed) to subscribers' endpoints as
// signed Standard Webhooks: at least once, in order per conversation, retried with
// backoff, given up after a while (dead, and replayable). It owns the subscriptions
// and deliveries tables (migration 013).
//
// The work runs as a queue of deliveries, with the processor's machinery (claims with
// FOR UPDATE SKIP LOCKED in one short transaction, leases, fenced finishes, its
// transaction settings and its LISTEN connection), in every inboxd process:
//
//  1. Fan-out: for each active subscription, the changes after its cursor that are
//     final (the feed's watermark: no change committed late is skipped) become
//     deliveries of the types it wants, and the cursor moves past them, in one
//     transaction that holds the subscription's fan-out lock (one process at a time;
//     the others skip it).
//  2. Claim: pending deliveries that are due, up to what this process has room for
//     and at most PerSubscription in flight per subscription (across processes), so
//     one slow endpoint cannot take every slot; subscriptions whose circuit breaker is
//     open are left out. The attempt is counted and a lease taken in the claim's commit.
//  3. Send: the change's JSON, signed, to the URL, with a timeout; the response's
//     status decides (2xx delivered; timeouts, network errors, 408, 429 and 5xx are
//     retried after Backoff or Retry-After; any other answer, a redirect included, is
//     dead at once, since sending it again would get the same answer).
//  4. Finish (finish.go, in batches): the outcome, fenced by lease (state, holder,
//     attempt), and the promotion of the conversation's next delivery when this one
//     is done; a retry keeps its place at the head, so its conversation's later
//     changes wait for it.
//
// A process that dies mid-delivery leaves the delivery 'delivering' until its lease
// ends (the timeout plus a margin); the sweep then makes it pending again, and the
// endpoint gets it again: at least once. Consumers dedupe on webhook-id, the change id.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"inboxd/internal/feed"
	"inboxd/internal/processor"
	"inboxd/internal/provider"
)

// Config tunes a Deliverer; zero values take the defaults.
type Config struct {
	// Timeout bounds one attempt: connect, send, and the response's headers and
	// first bytes (INBOX_DELIVERY_TIMEOUT).
	Timeout time.Duration
	// GiveUp is how long a delivery is retried before it is dead
	// (INBOX_DELIVERY_GIVE_UP), counted from when it was made (or replayed, or its
	// subscription resumed).
	GiveUp time.Duration
	// AllowPrivate lets subscriptions deliver to loopback, private and link-local
	// addresses (INBOX_DELIVERY_ALLOW_PRIVATE): for tests and private networks.
	AllowPrivate bool
	// InFlight bounds the deliveries this process sends at once.
	InFlight int
	// PerSubscription bounds one subscription's deliveries in flight, all processes
	// together.
	PerSubscription int
	// SweepInterval is how often expired leases, due retries and give-ups are looked
	// for (the processor's INBOX_SWEEP_INTERVAL).
	SweepInterval time.Duration
	// ID is this process's name in locked_by (the processor's).
	ID string
	// Tracing makes a span per delivery; nil: none.
	Tracing trace.TracerProvider
}

// Defaults of Config.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultGiveUp          = 24 * time.Hour
	DefaultInFlight        = 64
	DefaultPerSubscription = 16
)

func (c *Config) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.GiveUp <= 0 {
		c.GiveUp = DefaultGiveUp
	}
	if c.InFlight <= 0 {
		c.InFlight = DefaultInFlight
	}
	if c.PerSubscription <= 0 {
		c.PerSubscription = DefaultPerSubscription
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = processor.DefaultSweepInterval
	}
	if c.ID == "" {
		c.ID = processor.NewID()
	}
	if c.Tracing == nil {
		c.Tracing = noop.NewTracerProvider()
	}
}

// lease is how long a claimed delivery is held: the attempt's timeout, the finish,
// and a margin for a slow database.
func (c Config) lease() time.Duration { return c.Timeout + 5*time.Second }

// The circuit breaker: after breakerAfter failed attempts in a row the endpoint is
// left alone for a second, doubling with each further failure up to breakerCap; while
// it is open no delivery to it is claimed, and when it ends one delivery is tried (a
// probe) before the others, until one succeeds.
const (
	breakerAfter = 5
	breakerCap   = 5 * time.Minute
)

// fanoutBatch is the most changes one fan-out transaction considers.
const fanoutBatch = 500

// gatherWait spaces the fan-outs that notifications cause, so that a burst of commits
// is fanned out in a few transactions rather than one each.
const gatherWait = 2 * time.Millisecond

// Lock key spaces of the advisory locks taken here (two-int form; the processor and
// erasure use others): the fan-out of a subscription, and the order of a
// (subscription, conversation).
const (
	fanoutLockSpace = 0x696e6266 // "inbf"
	orderLockSpace  = 0x696e6264 // "inbd"
)

// orderKey is the advisory lock key of a (subscription, conversation): a hash, since
// the lock takes 32 bits; two pairs that collide only wait for each other.
func orderKey(subscription, conversation int64) int32 {
	h := fnv.New32a()
	var b [16]byte
	for i := range 8 {
		b[i] = byte(subscription >> (8 * i))
		b[8+i] = byte(conversation >> (8 * i))
	}
	h.Write(b[:])
	return int32(h.Sum32())
}

// Deliverer runs fan-out, claims and sends. Run it; call Wake when changes were
// committed.
type Deliverer struct {
	pool     *pgxpool.Pool
	cfg      Config
	log      *zap.Logger
	metrics  *Metrics
	client   *http.Client
	tracer   trace.Tracer
	settings string
	wake     chan struct{} // capacity 1: changes were committed (fan out, then claim)
	freed    chan struct{} // capacity 1: a delivery finished (claim: a slot is free, its successor may be due)
	slots    chan struct{} // a token per delivery in flight in this process
	results  chan attempt  // attempts made, for the finisher
	inflight sync.WaitGroup
}

// New returns a Deliverer on pool.
func New(pool *pgxpool.Pool, cfg Config, log *zap.Logger, m *Metrics) *Deliverer {
	cfg.setDefaults()
	return &Deliverer{pool: pool, cfg: cfg, log: log, metrics: m, client: newClient(cfg.AllowPrivate),
		tracer: cfg.Tracing.Tracer("inboxd/delivery"), settings: processor.TxSettings(cfg.lease()),
		wake: make(chan struct{}, 1), freed: make(chan struct{}, 1), slots: make(chan struct{}, cfg.InFlight), results: make(chan attempt, cfg.InFlight)}
}

// Wake asks for a fan-out and a claim: changes were committed, or a subscription
// changed. It never blocks.
func (d *Deliverer) Wake() { signal(d.wake) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then waits for the deliveries in flight (each bounded
// by the timeout) and records their outcomes; what it could not finish is taken over
// when its lease ends.
func (d *Deliverer) Run(ctx context.Context) error {
	finishCtx, stopFinisher := context.WithCancel(context.WithoutCancel(ctx))
	finished := make(chan struct{})
	go func() { defer close(finished); d.finisher(finishCtx) }()
	defer func() {
		d.inflight.Wait() // the finisher has recorded every attempt
		stopFinisher()
		<-finished
	}()
	sweep := time.NewTimer(0)
	defer sweep.Stop()
	for {
		fanOut := true
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
			time.Sleep(gatherWait)
		case <-d.freed:
			fanOut = false
		case <-sweep.C:
			d.sweep(ctx)
			sweep.Reset(jitter(d.cfg.SweepInterval))
		}
		if err := d.pass(ctx, fanOut); err != nil && ctx.Err() == nil {
			d.log.Warn("delivery pass failed; the next wake-up or sweep tries again", zap.Error(err))
		}
	}
}

// pass fans out what was committed (unless only a delivery finished), then claims
// and starts deliveries while there are due ones and room for them.
func (d *Deliverer) pass(ctx context.Context, fanOut bool) error {
	if fanOut {
		if err := d.fanOutAll(ctx); err != nil {
			return err
		}
	}
	for {
		room := cap(d.slots) - len(d.slots)
		if room == 0 {
			return nil // a finish wakes us
		}
		claimed, err := d.claim(ctx, room)
		if err != nil || len(claimed) == 0 {
			return err
		}
		for _, c := range claimed {
			d.slots <- struct{}{}
			d.inflight.Add(1)
			go d.deliver(context.WithoutCancel(ctx), c) // the finisher frees its slot
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d*9/10 + rand.N(d/5+1)
}

// batch starts a pipelined batch with the processor's transaction settings (one
// implicit transaction, as the processor's claims are).
func (d *Deliverer) batch() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(d.settings)
	return b
}

// ---- fan-out ----

// activeSubscriptions lists the subscriptions that fan-out serves.
const activeSubscriptions = `SELECT id FROM subscriptions WHERE state = 'active' ORDER BY id`

func (d *Deliverer) fanOutAll(ctx context.Context) error {
	rows, err := d.pool.Query(ctx, activeSubscriptions)
	if err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	var errs []error
	for _, id := range ids {
		for {
			n, err := d.fanOut(ctx, id)
			if err != nil {
				errs = append(errs, fmt.Errorf("fan out subscription %d: %w", id, err))
			}
			if err != nil || n < fanoutBatch {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// fanOutPosition locks a subscription's fan-out without waiting (another process
// holding it is doing the work) and reads where it stands.
const fanOutPosition = `
SELECT cursor_xid::text::bigint, cursor_seq, types, providers
FROM subscriptions
WHERE id = $1 AND state = 'active' AND pg_try_advisory_xact_lock($2::int, id::int)`

// insertDeliveries makes a delivery of each change ($2-$4: xids, seqs, conversations,
// in feed order; $5: how many milliseconds each waits before its first attempt). The
// first of a conversation is pending when the subscription has nothing undelivered in
// it, the others wait; a change already delivered or dead (a replay moved the cursor
// back) is made undelivered again the same way.
const insertDeliveries = `
INSERT INTO deliveries AS d (subscription_id, change_xid, change_seq, conversation_id, state, run_at)
SELECT $1, t.x::text::xid8, t.s, t.c,
       CASE WHEN row_number() OVER (PARTITION BY t.c ORDER BY t.x, t.s) = 1
             AND NOT EXISTS (SELECT FROM deliveries u
                             WHERE u.subscription_id = $1 AND u.conversation_id = t.c
                               AND u.state IN ('pending', 'delivering'))
             AND NOT EXISTS (SELECT FROM deliveries u
                             WHERE u.subscription_id = $1 AND u.conversation_id = t.c AND u.state = 'waiting')
            THEN 'pending' ELSE 'waiting' END,
       CASE WHEN t.w > 0
            THEN greatest(now(), (SELECT ch.occurred_at FROM changes ch WHERE ch.xid = t.x::text::xid8 AND ch.seq = t.s)
                                 + t.w * interval '1 millisecond')
            ELSE now() END
FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(x, s, c, w)
ON CONFLICT (change_xid, change_seq, subscription_id) DO UPDATE
SET state = EXCLUDED.state, attempts = 0, run_at = EXCLUDED.run_at, since = now(), locked_by = NULL,
    last_status = NULL, last_error = NULL, delivered_at = NULL
WHERE d.state IN ('delivered', 'dead')`

const moveCursor = `UPDATE subscriptions SET cursor_xid = $2::text::xid8, cursor_seq = $3 WHERE id = $1`

// fanOut turns up to fanoutBatch final changes after the subscription's cursor into
// deliveries and returns how many changes it read.
func (d *Deliverer) fanOut(ctx context.Context, sub int64) (int, error) {
	var read int
	err := pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{BeginQuery: "BEGIN; " + d.settings}, func(tx pgx.Tx) error {
		var cur feed.Cursor
		var xid int64
		var types, providers []string
		err := tx.QueryRow(ctx, fanOutPosition, sub, fanoutLockSpace).Scan(&xid, &cur.Seq, &types, &providers)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // paused, deleted, or another process is on it
		}
		if err != nil {
			return err
		}
		cur.XID = uint64(xid)
		changes, err := feed.Positions(ctx, tx, cur, fanoutBatch)
		if err != nil || len(changes) == 0 {
			return err
		}
		read = len(changes)
		others, err := otherProviders(ctx, tx, changes, providers)
		if err != nil {
			return err
		}
		var xids, seqs, convs, waits []int64
		var keys []int32
		for _, c := range changes {
			if !wants(types, c.Type) || others[c.ConversationID] {
				continue
			}
			xids, seqs, convs = append(xids, int64(c.Cursor.XID)), append(seqs, c.Cursor.Seq), append(convs, c.ConversationID)
			waits = append(waits, d.firstWait(c.Type).Milliseconds())
			keys = append(keys, orderKey(sub, c.ConversationID))
		}
		if len(xids) > 0 {
			if _, err := tx.Exec(ctx, lockOrders, sortedUnique(keys), orderLockSpace); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, insertDeliveries, sub, xids, seqs, convs, waits); err != nil {
				return err
			}
		}
		last := changes[len(changes)-1].Cursor
		_, err = tx.Exec(ctx, moveCursor, sub, fmt.Sprint(last.XID), last.Seq)
		return err
	})
	if err == nil && read > 0 {
		d.metrics.fannedOut.Add(float64(read))
	}
	return read, err
}

// firstWait is how long after a change of type typ was written its delivery waits
// before its first attempt (insertDeliveries counts from the change's occurred_at).
// A contact.erased change waits out a lease: the erasure that wrote it deleted the
// conversation's earlier changes and, with them, their deliveries, one of which may
// be in flight in some process, its body already read. That attempt was claimed
// before its delivery was deleted, so before the contact.erased was written (the
// erasure's last statement, clock_timestamp()), and ends within its lease: the
// subscriber gets the erasure after it, never an erased message after the erasure.
// A replay that fans the change out again once that lease is over sends it at once.
func (d *Deliverer) firstWait(typ string) time.Duration {
	if typ == feed.ContactErased {
		return d.cfg.lease()
	}
	return 0
}

// lockOrders takes the order locks of (subscription, conversation) pairs, in the
// order given (sorted: two transactions taking several never deadlock).
const lockOrders = `SELECT pg_advisory_xact_lock($2::int, k) FROM unnest($1::int[]) AS k`

// otherConversations are those of $1 whose provider is none of $3 (a provider's
// name takes in its named senders, as provider.Matches has it): a stored
// conversation's, or, for one an erasure deleted, the provider its contact.erased
// change names (the changes ($2, $4): xids and seqs).
var otherConversations = `
SELECT c.id FROM conversations c
WHERE c.id = ANY($1)
  AND NOT EXISTS (SELECT FROM unnest($3::text[]) p(name) WHERE ` + provider.MatchSQL("c.provider", "p.name") + `)
UNION
SELECT e.conversation_id FROM changes e
WHERE (e.xid, e.seq) IN (SELECT x::text::xid8, s FROM unnest($2::bigint[], $4::bigint[]) t(x, s))
  AND e.type = 'contact.erased' AND e.data ? 'provider'
  AND NOT EXISTS (SELECT FROM unnest($3::text[]) p(name) WHERE ` + provider.MatchSQL("e.data->>'provider'", "p.name") + `)`

// otherProviders returns the conversations of changes that a subscription to
// providers (nil: every provider) is not sent. A conversation no longer stored, whose
// contact.erased does not say its provider (one written before it did), is not among
// them: its erasure, which carries no personal data, reaches every subscription.
func otherProviders(ctx context.Context, tx pgx.Tx, changes []feed.Position, providers []string) (map[int64]bool, error) {
	if providers == nil {
		return nil, nil
	}
	ids, xids, seqs := make([]int64, 0, len(changes)), []int64{}, []int64{}
	for _, c := range changes {
		ids = append(ids, c.ConversationID)
		if c.Type == feed.ContactErased {
			xids, seqs = append(xids, int64(c.Cursor.XID)), append(seqs, c.Cursor.Seq)
		}
	}
	rows, _ := tx.Query(ctx, otherConversations, ids, xids, providers, seqs)
	others := map[int64]bool{}
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { others[id] = true; return nil }); err != nil {
		return nil, fmt.Errorf("read the providers of conversations: %w", err)
	}
	return others, nil
}

func wants(types []string, typ string) bool {
	for _, t := range types {
		if t == typ {
			return true
		}
	}
	return false
}

func sortedUnique(keys []int32) []int32 {
	slices.Sort(keys)
	return slices.Compact(keys)
}
