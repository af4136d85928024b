package privacy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/processor"
	"inboxd/internal/redact"
)

// An erasure removes a contact's conversations, messages and parked statuses, and
// empties the payloads of their events, which stay as tombstones until retention (a
// late redelivery still answers duplicate:true and stores nothing). It works in
// batches of DefaultBatch rows, each its own short transaction, so it never holds
// more than a batch's row locks and never blocks ingest, which takes none of them.
//
// Safe under a stream of that contact's webhooks: each batch first takes the
// contact's locks exclusively (processor.LockContacts), which every apply of an
// event about that contact takes shared from before it looks for the conversation
// until it commits. So a batch sees each apply whole or not at all: a message and
// its event's contact are committed together (the outcome is recorded in the apply's
// transaction), and the batch deletes the message and empties the event together.
// The last batch is the first that does not fill up (it found all there was); under
// the same locks it deletes the conversations, which no apply can be adding to. A
// contact whose messages keep coming cannot keep an erasure running: it ends at the
// first batch that outruns them. Hence the rule the receipt
// stands on: whatever was applied before the erasure's last batch committed is
// erased, message and payload; whatever is applied after it is kept whole, in a new
// conversation.
//
// An event a processor has read before carries its contact (a retry waiting, or a
// replayed event processed once already), and the erasure takes it whatever its
// state. Waiting, it is emptied and leaves the queue (processor.Erased), so that a
// replay started before the erasure cannot bring the contact's messages back after
// it. Being processed, its holder has the payload and would apply it after the batch:
// the last batch is one that finds none of those (inHand), and a batch before it
// erases what they applied. Being processed under a lease that ran out, it is
// nobody's (its holder's work ended at three quarters of the lease) and is erased
// like a waiting one. Only an event no processor has read yet (stored just now,
// or queued behind a backlog) is unknown to the erasure; it is kept if it is applied
// after the end, as one that arrives after it is.
//
// What an erasure cannot find: an event inboxd could not read (dead because its
// payload made no sense) is tied to no contact; it goes with INBOX_DEAD_RETENTION.

// DefaultBatch is the number of messages, and of events, one batch handles.
const DefaultBatch = 1000

// Counts are the rows an erasure removed (or, for a dry run, would remove).
type Counts struct {
	Conversations   int64 `json:"conversations"`
	Messages        int64 `json:"messages"`
	Events          int64 `json:"events"`
	PendingStatuses int64 `json:"pending_statuses"`
	Changes         int64 `json:"changes"` // of the change feed
}

func (c *Counts) add(o Counts) {
	c.Conversations += o.Conversations
	c.Messages += o.Messages
	c.Events += o.Events
	c.PendingStatuses += o.PendingStatuses
	c.Changes += o.Changes
}

// Receipt is an erasure as GET /v1/erasures/{id} shows it. The address is not in
// it: ContactHash is its keyed hash (HashAddress), which proves what was erased to
// someone who knows the address.
type Receipt struct {
	ID          int64      `json:"id"`
	State       string     `json:"state"` // running or done
	Provider    *string    `json:"provider"`
	ContactHash string     `json:"contact_hash"`
	Counts      Counts     `json:"counts"`
	RequestedAt time.Time  `json:"requested_at"`
	FinishedAt  *time.Time `json:"finished_at"`
}

// ErrNotFound: no erasure has that id.
var ErrNotFound = errors.New("not found")

// Eraser runs erasures.
type Eraser struct {
	pool   *pgxpool.Pool
	log    *zap.Logger
	policy *redact.Policy // to find addresses stored hashed; may be nil
	id     string         // this process, for leases
	Batch  int            // rows a batch handles; 0: DefaultBatch
	wake   chan struct{}
}

// NewEraser returns an Eraser. id names this process in erasure leases.
func NewEraser(pool *pgxpool.Pool, log *zap.Logger, policy *redact.Policy, id string) *Eraser {
	return &Eraser{pool: pool, log: log, policy: policy, id: id, wake: make(chan struct{}, 1)}
}

func (e *Eraser) batch() int {
	if e.Batch > 0 {
		return e.Batch
	}
	return DefaultBatch
}

// Subject checks an address as a user typed it, under the Eraser's policy.
func (e *Eraser) Subject(address, provider string) (Subject, error) {
	return NewSubject(address, provider, e.policy)
}

// HashAddress is the keyed hash a receipt stores for address (as Subject.Address):
// HMAC-SHA-256 under the database's own erasure key (made by migration 010).
func HashAddress(ctx context.Context, pool *pgxpool.Pool, address string) (string, error) {
	var key []byte
	if err := pool.QueryRow(ctx, `SELECT value FROM inbox_keys WHERE name = 'erasure'`).Scan(&key); err != nil {
		return "", fmt.Errorf("read the erasure key: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(address))
	return hex.EncodeToString(m.Sum(nil)), nil
}

// Start records an erasure of s (state running) and wakes this process's runner.
// The caller answers with the receipt at once; Work does the erasing.
func (e *Eraser) Start(ctx context.Context, s Subject) (Receipt, error) {
	hash, err := HashAddress(ctx, e.pool, s.Address)
	if err != nil {
		return Receipt{}, err
	}
	rows, _ := e.pool.Query(ctx, `
INSERT INTO erasures (contact, contact_hash, provider) VALUES ($1, $2, NULLIF($3, ''))
RETURNING `+receiptColumns, s.Address, hash, s.Provider)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Receipt])
	if err != nil {
		return Receipt{}, fmt.Errorf("record erasure: %w", err)
	}
	e.log.Info("erasure requested", zap.Int64("erasure_id", r.ID), zap.Stringp("provider", r.Provider))
	e.Wake()
	return r, nil
}

const receiptColumns = `id, state, provider, contact_hash, counts, requested_at, finished_at`

// Find returns erasure id's receipt.
func (e *Eraser) Find(ctx context.Context, id int64) (Receipt, error) {
	rows, _ := e.pool.Query(ctx, `SELECT `+receiptColumns+` FROM erasures WHERE id = $1`, id)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Receipt])
	if errors.Is(err, pgx.ErrNoRows) {
		return Receipt{}, fmt.Errorf("erasure %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Receipt{}, fmt.Errorf("get erasure %d: %w", id, err)
	}
	return r, nil
}

// Receipts returns the newest erasures' receipts, newest first (the console's
// erasures page).
func Receipts(ctx context.Context, pool *pgxpool.Pool, limit int) ([]Receipt, error) {
	rows, _ := pool.Query(ctx, `SELECT `+receiptColumns+` FROM erasures ORDER BY id DESC LIMIT $1`, limit)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Receipt])
	if err != nil {
		return nil, fmt.Errorf("list erasures: %w", err)
	}
	return rs, nil
}

// Wake makes Work look for erasures now.
func (e *Eraser) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// lease is how long a runner holds an erasure between batches; another process
// resumes it once the lease runs out (the runner died).
const lease = time.Minute

// Work runs erasures until ctx ends: those this process started at once (Wake),
// and any other process left unfinished every poll.
func (e *Eraser) Work(ctx context.Context, poll time.Duration) {
	processor.RunJobs(ctx, poll, e.wake, e.RunNext, func(err error) {
		e.log.Error("erasure failed; it will be resumed", zap.Error(err))
	})
}

// RunNext claims one running erasure whose lease is free and runs it to the end. It
// reports whether there was one.
func (e *Eraser) RunNext(ctx context.Context) (bool, error) {
	var id int64
	var address, prov string
	err := e.pool.QueryRow(ctx, `
UPDATE erasures SET locked_by = $1, locked_until = now() + $2::bigint * interval '1 millisecond'
WHERE id = (SELECT id FROM erasures
            WHERE state = 'running' AND (locked_until IS NULL OR locked_until < now())
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, contact, COALESCE(provider, '')`, e.id, lease.Milliseconds()).Scan(&id, &address, &prov)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim an erasure: %w", err)
	}
	s, err := e.Subject(address, prov)
	if err != nil {
		return true, fmt.Errorf("erasure %d: %w", id, err)
	}
	return true, e.run(ctx, id, s)
}

// inHandPoll is how long an erasure waits, between batches that found nothing to do,
// for the contact's events being processed (inHand) to be finished.
const inHandPoll = 100 * time.Millisecond

// run erases in batches until one finds nothing left.
func (e *Eraser) run(ctx context.Context, id int64, s Subject) error {
	start := time.Now()
	var total Counts
	waited := false
	for {
		c, done, err := e.step(ctx, id, s)
		if err != nil {
			return fmt.Errorf("erasure %d: %w", id, err)
		}
		total.add(c)
		if !done && c == (Counts{}) {
			if !waited {
				e.log.Info("erasure waits for the contact's events being processed", zap.Int64("erasure_id", id))
				waited = true
			}
			if !processor.Sleep(ctx, inHandPoll) {
				return fmt.Errorf("erasure %d: %w", id, ctx.Err())
			}
		}
		if done {
			e.log.Info("erasure done", zap.Int64("erasure_id", id), zap.Duration("took", time.Since(start)),
				zap.Int64("messages", total.Messages), zap.Int64("events", total.Events),
				zap.Int64("conversations", total.Conversations), zap.Int64("pending_statuses", total.PendingStatuses),
				zap.Int64("changes", total.Changes))
			return nil
		}
	}
}

// eraseMessages deletes up to $3 of the contact's messages with their changes (a
// message's changes refer to it, migration 018: none may outlive it) and returns the
// events that created them (their payloads go too, in the same transaction) and how
// many changes went. The changes are probed one message at a time by
// (conversation_id, message_id) (a LATERAL probe, not a join the planner could turn
// round).
const eraseMessages = `
WITH doomed AS MATERIALIZED (
    SELECT id, inbound_event_id, conversation_id FROM messages
    WHERE conversation_id IN (` + subjectConversations + `)
    LIMIT $3::int
),
refs AS (
    DELETE FROM changes ch
    WHERE ch.ctid = ANY (ARRAY(
        SELECT x.ctid FROM doomed d
        CROSS JOIN LATERAL (
            SELECT ctid FROM changes c
            WHERE c.conversation_id = d.conversation_id AND c.message_id = d.id
            OFFSET 0
        ) x))
    RETURNING 1
)
DELETE FROM messages m USING doomed d
WHERE m.id = d.id
RETURNING d.inbound_event_id, (SELECT count(*) FROM refs)`

// eraseEvents empties the payloads of up to $3 of the contact's events (and of the
// events in $4), keeping the rows as tombstones, and deletes the statuses they
// parked. A waiting event the processor has read (a retry, or a replay) is erased
// and leaves the queue (processor.Erased), and so is one whose lease ran out; one
// being processed under a live lease is left for a later batch (see above).
const eraseEvents = `
WITH picked AS (
    (SELECT id FROM inbound_events e
     WHERE contact = ANY($1::text[]) AND erased_at IS NULL AND ` + processor.Unheld + ` AND ` + ofProvider + `
     LIMIT $3::int)
    UNION
    SELECT unnest($4::bigint[])
),` + processor.Erased + `,
parked AS (
    DELETE FROM pending_statuses p USING erased
    WHERE p.inbound_event_id = erased.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM erased), (SELECT count(*) FROM parked)`

// inHand counts the contact's events being processed that a processor read before
// (a retry, or a replay of one processed already): their holder has the payload, and
// may apply it after the batch that erased the rest. The erasure is not done while
// there is one. One whose lease ran out is nobody's, and eraseEvents took it earlier
// in the same transaction (now() is the transaction's time), so that an erasure run
// while no processor is (`inboxd erase` during an outage) ends. It reads the
// contact's events that are left (at the last batch, few: every one not in a
// processor's hands is erased), not the queue's leases index, which a plan would
// otherwise walk whole.
const inHand = `
WITH unerased AS MATERIALIZED (
    SELECT state FROM inbound_events
    WHERE contact = ANY($1::text[]) AND erased_at IS NULL AND ` + ofProvider + `
)
SELECT count(*) FILTER (WHERE state = 'processing') FROM unerased`

// eraseChanges deletes up to $3 of the change feed's entries about the contact's
// conversations (they carry its messages).
const eraseChanges = `
WITH gone AS (
    DELETE FROM changes ch
    USING (SELECT xid, seq FROM changes
           WHERE conversation_id IN (` + subjectConversations + `) AND type <> 'contact.erased'
           LIMIT $3::int) d
    WHERE ch.xid = d.xid AND ch.seq = d.seq
    RETURNING 1
)
SELECT count(*) FROM gone`

// eraseConversations deletes the contact's conversations, which have no messages
// left (the caller holds the contact's locks: no apply can be adding one), and tells
// the change feed's consumers (contact.erased, one per conversation, with its
// provider so that subscriptions to some providers only are told of theirs) so
// that they erase their copies.
const eraseConversations = `
WITH gone AS (
    DELETE FROM conversations c
    WHERE c.id IN (` + subjectConversations + `)
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)
    RETURNING c.id, c.provider
)
INSERT INTO changes (type, conversation_id, data)
SELECT 'contact.erased', id, jsonb_build_object('conversation_id', id, 'provider', provider, 'erasure_id', $3::bigint)
FROM gone ORDER BY id
RETURNING pg_notify('` + processor.ChangesChannel + `', '')`

// step runs one batch in one transaction: messages and the events that created them,
// then the contact's other events; when neither filled the batch and none of the
// contact's events is in a processor's hands, the conversations, and the erasure is
// done. The receipt's counts move in the same transaction, under the
// lease's fence: a runner that lost its lease changes nothing.
func (e *Eraser) step(ctx context.Context, id int64, s Subject) (c Counts, done bool, err error) {
	err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		c, done = Counts{}, false
		if err := processor.LockContacts(ctx, tx, s.Forms); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, eraseMessages, s.Forms, s.Provider, e.batch())
		var created []int64
		var event, refs int64
		if _, err := pgx.ForEachRow(rows, []any{&event, &refs}, func() error {
			created = append(created, event)
			return nil
		}); err != nil {
			return fmt.Errorf("erase messages: %w", err)
		}
		c.Messages, c.Changes = int64(len(created)), refs
		if err := tx.QueryRow(ctx, eraseEvents, s.Forms, s.Provider, e.batch(), created).Scan(&c.Events, &c.PendingStatuses); err != nil {
			return fmt.Errorf("erase events: %w", err)
		}
		// A batch that did not fill up found everything there was: under the locks,
		// nothing more can come, so this is the last batch. (Waiting for a batch that
		// finds nothing would never end while the contact's messages keep coming.)
		var rest int64
		if err := tx.QueryRow(ctx, eraseChanges, s.Forms, s.Provider, e.batch()).Scan(&rest); err != nil {
			return fmt.Errorf("erase changes: %w", err)
		}
		c.Changes += rest
		full := int64(e.batch())
		last := c.Messages < full && c.Events < full && rest < full
		if last {
			var held int64
			if err := tx.QueryRow(ctx, inHand, s.Forms, s.Provider).Scan(&held); err != nil {
				return fmt.Errorf("look for the contact's events being processed: %w", err)
			}
			last = held == 0
		}
		if last {
			tag, err := tx.Exec(ctx, eraseConversations, s.Forms, s.Provider, id)
			if err != nil {
				return fmt.Errorf("erase conversations: %w", err)
			}
			c.Conversations, done = tag.RowsAffected(), true
		}
		tag, err := tx.Exec(ctx, `
UPDATE erasures
SET counts = jsonb_build_object(
        'conversations', COALESCE((counts->>'conversations')::bigint, 0) + $3,
        'messages', COALESCE((counts->>'messages')::bigint, 0) + $4,
        'events', COALESCE((counts->>'events')::bigint, 0) + $5,
        'pending_statuses', COALESCE((counts->>'pending_statuses')::bigint, 0) + $6,
        'changes', COALESCE((counts->>'changes')::bigint, 0) + $9),
    state        = CASE WHEN $7 THEN 'done' ELSE state END,
    contact      = CASE WHEN $7 THEN NULL ELSE contact END,
    finished_at  = CASE WHEN $7 THEN now() END,
    locked_until = CASE WHEN $7 THEN NULL ELSE now() + $8::bigint * interval '1 millisecond' END
WHERE id = $1 AND locked_by = $2 AND state = 'running'`,
			id, e.id, c.Conversations, c.Messages, c.Events, c.PendingStatuses, done, lease.Milliseconds(), c.Changes)
		if err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("lost the lease: another process resumed it")
		}
		return nil
	})
	return c, done, err
}

// dryRun counts what an erasure of the subject would remove.
const dryRun = `
WITH convs AS (` + subjectConversations + `),
evs AS (
    SELECT id FROM inbound_events
    WHERE erased_at IS NULL AND id IN (` + subjectEvents + `)
)
SELECT (SELECT count(*) FROM convs), (SELECT count(*) FROM messages WHERE conversation_id IN (SELECT id FROM convs)),
       (SELECT count(*) FROM evs),
       (SELECT count(*) FROM pending_statuses WHERE inbound_event_id IN (SELECT id FROM evs)),
       (SELECT count(*) FROM changes WHERE conversation_id IN (SELECT id FROM convs) AND type <> 'contact.erased')`

// Preview is a dry run as the API and `inboxd erase --dry-run` answer it: the address
// as it was looked up, so that a number typed without its country code shows itself
// (5552223333 is +5552223333), and what erasing it would remove now.
type Preview struct {
	DryRun   bool    `json:"dry_run"` // always true: a preview is never taken for a receipt
	Contact  string  `json:"contact"`
	Provider *string `json:"provider"`
	Counts   Counts  `json:"counts"`
}

// NewPreview is the preview of s with the counts DryRun found.
func NewPreview(s Subject, c Counts) Preview {
	p := Preview{DryRun: true, Contact: s.Address, Counts: c}
	if s.Provider != "" {
		p.Provider = &s.Provider
	}
	return p
}

// DryRun counts what erasing s would remove now, changing nothing.
func DryRun(ctx context.Context, pool *pgxpool.Pool, s Subject) (Counts, error) {
	var c Counts
	err := pool.QueryRow(ctx, dryRun,
		s.Forms, s.Provider).Scan(&c.Conversations, &c.Messages, &c.Events, &c.PendingStatuses, &c.Changes)
	if err != nil {
		return Counts{}, fmt.Errorf("count what an erasure would remove: %w", err)
	}
	return c, nil
}
