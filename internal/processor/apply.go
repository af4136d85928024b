package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/provider"
)

// Applying a batch is set-based: a fixed number of statements whatever the batch size,
// queued on one pgx.Batch and sent in one round trip. Per-event statements (three
// round trips an event with savepoints) capped throughput near 3,000 events/s, and
// more than 64 savepoints in one transaction overflow Postgres' subtransaction cache,
// which slows every other backend's snapshots. When a batch fails as a whole, batch.go
// falls back to applying each event alone, inside a savepoint, with these same
// statements and one-element arrays: one SQL path, two granularities.
//
// Lock discipline (why many workers on one conversation never deadlock):
//  0. First, a shared advisory lock per contact address the batch touches, in
//     ascending order (LockContacts). Applies share it; an erasure takes it
//     exclusively, so a contact's conversation is never deleted between the statement
//     that finds it and the one that inserts into it, and what an erasure's batch
//     sees of that contact is every apply committed or none begun.
//  1. Then one transaction-scoped advisory lock per (provider, message id), all in
//     ascending order. A message and the statuses about it are thus serialized: the
//     status sees the message or the message sees the parked status, never neither.
//  2. New conversations are inserted sorted by key (uniqueness waits in one order).
//  3. Last, conversation rows are locked in id order (touchConversations), just before
//     commit, so the lock that every message of a busy conversation needs is held for
//     as short a time as possible.
// Every transaction takes advisory locks before row locks and each kind in ascending
// order, so that no cycle of these waits forms. (Postgres has still reported a
// deadlock between two applies in step 3, once, under load, with a row's older
// version involved. A batch rolled back that way is sent again at once: applyBatch.)

// lockContacts takes the shared contact locks, in the order of the array (sorted by
// the caller). The two-integer form keeps them apart from the message locks.
const lockContacts = `SELECT count(pg_advisory_xact_lock_shared($1::int, k)) FROM unnest($2::int[]) AS t(k)`

// contactLockSpace is the first key of every contact lock ("inbx").
const contactLockSpace = 0x696e6278

// contactLockID hashes a contact address into the second key of its lock. A collision
// only makes an erasure wait for an unrelated apply.
func contactLockID(address string) int32 {
	h := fnv.New32a()
	h.Write([]byte(address))
	return int32(h.Sum32())
}

// contactLockIDs returns the lock keys of addresses, sorted and without repeats.
func contactLockIDs(addresses []string) []int32 {
	keys := make([]int32, 0, len(addresses))
	for _, a := range addresses {
		if a != "" {
			keys = append(keys, contactLockID(a))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// LockContacts takes, in tx, the exclusive lock of each address (as
// conversations.contact_address spells it; see the lock discipline above): until tx
// ends, no apply that touches one of these contacts runs, and every apply that did
// has committed. Erasure calls it before each of its batches.
func LockContacts(ctx context.Context, tx pgx.Tx, addresses []string) error {
	_, err := tx.Exec(ctx, `SELECT count(pg_advisory_xact_lock($1::int, k)) FROM unnest($2::int[]) AS t(k)`,
		contactLockSpace, contactLockIDs(addresses))
	if err != nil {
		return fmt.Errorf("lock %d contact addresses: %w", len(addresses), err)
	}
	return nil
}

// lockMessages takes the advisory locks in the order of the array (sorted by the caller).
const lockMessages = `SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)`

// The apply statements below are cached as generic plans (session.go), which may be
// made while the tables look empty. Each lookup of a table by a batch's keys is
// written so that no join order can read a whole index: a LATERAL subquery (OFFSET 0
// keeps the planner from flattening it) probes the whole key per element, and rows
// then updated or deleted are found by primary key (or ctid) = ANY of what the probes
// found (plans_test.go). Binding each key column to = ANY of the batch's arrays
// instead let a plan use the provider alone and read every message of it.

// Changes (the change feed, migration 012) are written by the statements that make
// them, from what those statements return: data is the row as the API serves it
// (to_jsonb of the row; a message without its internal inbound_event_id). In one
// transaction they follow the statements' order: a conversation's creation before its
// first message, a message before its statuses.

// ensureConversations creates missing conversations (and their conversation.created
// changes). DO NOTHING takes no lock on an existing row; last_message_at is moved
// forward at the end (touchConversations).
const ensureConversations = `
WITH created AS (
    INSERT INTO conversations (provider, channel_address, contact_address, contact_name, last_message_at)
    SELECT DISTINCT ON (provider, channel, contact) provider, channel, contact, NULLIF(name, ''), at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS t(provider, channel, contact, name, at)
    ORDER BY provider, channel, contact, at DESC
    ON CONFLICT (provider, channel_address, contact_address) DO NOTHING
    RETURNING *
)
INSERT INTO changes (type, conversation_id, data)
SELECT 'conversation.created', c.id, to_jsonb(c) FROM created c ORDER BY c.id`

// insertMessages stores messages (a reprocessed event's message exists: DO NOTHING)
// and their message.created changes. Statuses that arrived before their message are
// taken out of pending_statuses and the best one (highest rank, first arrived among
// equals) is applied on insert.
const insertMessages = `
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::bigint[],
                         $15::text[])
        AS t(provider, message_id, channel, contact, direction, type, sender, recipient, body, media, content, status, sent_at, event_id,
             traceparent)
),
parked AS (
    DELETE FROM pending_statuses p
    WHERE p.ctid = ANY (ARRAY(
        SELECT ps.ctid FROM input i
        CROSS JOIN LATERAL (
            SELECT ctid FROM pending_statuses ps
            WHERE ps.provider = i.provider AND ps.provider_message_id = i.message_id
            OFFSET 0
        ) ps))
    RETURNING p.*
),
best AS (
    SELECT DISTINCT ON (provider, provider_message_id) * FROM parked
    ORDER BY provider, provider_message_id, inbox_status_rank(status) DESC, inbound_event_id
),
inserted AS (
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, type, sender, recipient,
                      text, media, content, status, status_at, error, sent_at, inbound_event_id)
SELECT i.provider, i.message_id, c.id, i.direction, i.type, i.sender, i.recipient,
       NULLIF(i.body, ''), i.media::jsonb, i.content::jsonb,
       CASE WHEN inbox_status_rank(b.status) > inbox_status_rank(i.status) THEN b.status ELSE i.status END,
       CASE WHEN inbox_status_rank(b.status) > inbox_status_rank(i.status) THEN b.status_at ELSE i.sent_at END,
       CASE WHEN inbox_status_rank(b.status) > inbox_status_rank(i.status) THEN b.error END,
       i.sent_at, i.event_id
FROM input i
CROSS JOIN LATERAL (
    SELECT id FROM conversations c
    WHERE c.provider = i.provider AND c.channel_address = i.channel AND c.contact_address = i.contact
    OFFSET 0
) c
LEFT JOIN best b ON b.provider = i.provider AND b.provider_message_id = i.message_id
ORDER BY i.provider, i.message_id, i.event_id
ON CONFLICT (provider, provider_message_id) DO NOTHING
RETURNING id, conversation_id, status, status_at, error, inbound_event_id, provider_message_id
)
INSERT INTO changes (type, conversation_id, message_id, status, status_at, error, traceparent)
SELECT 'message.created', m.conversation_id, m.id, m.status, m.status_at, m.error, i.traceparent
FROM inserted m JOIN input i ON i.event_id = m.inbound_event_id AND i.message_id = m.provider_message_id
ORDER BY m.id`

// applyStatuses moves messages' statuses forward (never back: a lower or equal rank
// changes nothing; among a batch's statuses for one message the highest rank wins,
// the first arrived among equals), with a message.status_changed change for each
// message moved, and parks statuses whose message is not stored yet. Messages
// inserted earlier in this transaction are visible here.
const applyStatuses = `
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[], $7::text[])
        AS t(provider, message_id, status, at, error, event_id, traceparent)
),
best AS (
    SELECT DISTINCT ON (provider, message_id) * FROM input
    ORDER BY provider, message_id, inbox_status_rank(status) DESC, event_id
),
target AS MATERIALIZED (
    SELECT x.id, b.status, b.at, b.error, b.traceparent
    FROM best b
    CROSS JOIN LATERAL (
        SELECT id FROM messages mm
        WHERE mm.provider = b.provider AND mm.provider_message_id = b.message_id
        OFFSET 0
    ) x
),
moved AS (
    UPDATE messages m
    SET status = t.status, status_at = t.at, error = COALESCE(t.error::jsonb, m.error)
    FROM target t
    WHERE m.id = t.id AND m.id = ANY (ARRAY(SELECT id FROM target))
      AND inbox_status_rank(t.status) > inbox_status_rank(m.status)
    RETURNING m.id, m.conversation_id, m.status, m.status_at, m.error, t.traceparent
),
changed AS (
    INSERT INTO changes (type, conversation_id, message_id, status, status_at, error, traceparent)
    SELECT 'message.status_changed', mv.conversation_id, mv.id, mv.status, mv.status_at, mv.error, mv.traceparent
    FROM moved mv ORDER BY mv.id
)
INSERT INTO pending_statuses (provider, provider_message_id, inbound_event_id, status, status_at, error)
SELECT i.provider, i.message_id, i.event_id, i.status, i.at, i.error::jsonb
FROM input i
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.provider = i.provider AND m.provider_message_id = i.message_id
                  OFFSET 0)
ON CONFLICT DO NOTHING`

// touchConversations moves last_message_at forward (and learns contact names). Rows
// are locked in id order (locked); a conversation already as recent is not locked at
// all (found).
const touchConversations = `
WITH latest AS (
    SELECT provider, channel, contact, max(at) AS at, max(NULLIF(name, '')) AS name
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS t(provider, channel, contact, name, at)
    GROUP BY provider, channel, contact
),
found AS (
    SELECT c.id, l.at, l.name
    FROM latest l
    CROSS JOIN LATERAL (
        SELECT id, last_message_at, contact_name FROM conversations c
        WHERE c.provider = l.provider AND c.channel_address = l.channel AND c.contact_address = l.contact
        OFFSET 0
    ) c
    WHERE l.at > c.last_message_at OR l.name IS DISTINCT FROM c.contact_name AND l.name IS NOT NULL
),
locked AS (
    SELECT id FROM conversations
    WHERE id = ANY (ARRAY(SELECT id FROM found))
    ORDER BY id
    FOR NO KEY UPDATE
)
UPDATE conversations c
SET last_message_at = GREATEST(c.last_message_at, f.at),
    contact_name    = COALESCE(f.name, c.contact_name)
FROM found f
WHERE c.id = f.id AND c.id = ANY (ARRAY(SELECT id FROM locked))`

// messageLockID hashes (provider, message id) into the advisory lock space.
func messageLockID(provider, messageID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(provider))
	h.Write([]byte{0})
	h.Write([]byte(messageID))
	return int64(h.Sum64())
}

// Applied is an event to apply: its row, provider and meaning.
type Applied struct {
	ID       int64
	Provider string
	provider.Normalized
}

// QueueApply queues on b the statements that apply events (normalized without error)
// to conversations and messages: the apply step of a batch, for a caller that holds
// the events by other means (the River baseline in bench/river). b must run as one
// transaction with TxSettings.
func QueueApply(b *pgx.Batch, events []Applied) error {
	claims := make([]claimed, len(events))
	norms := make([]provider.Normalized, len(events))
	for i, e := range events {
		claims[i], norms[i] = claimed{ID: e.ID, Provider: e.Provider}, e.Normalized
	}
	return queueApply(b, claims, norms)
}

// queueApply queues on b the statements that apply events (all normalized without
// error) in one go.
func queueApply(b *pgx.Batch, events []claimed, norms []provider.Normalized) error {
	var keys []int64
	var contacts []string
	var m messageCols
	var s statusCols
	for i, ev := range events {
		n := norms[i]
		contacts = append(contacts, n.Contact())
		if n.Message != nil {
			keys = append(keys, messageLockID(ev.Provider, n.Message.ID))
			if err := m.add(ev, n.Message); err != nil {
				return err
			}
		} else {
			keys = append(keys, messageLockID(ev.Provider, n.Status.MessageID))
			s.add(ev, n.Status)
		}
	}
	if locks := contactLockIDs(contacts); len(locks) > 0 {
		b.Queue(lockContacts, contactLockSpace, locks)
	}
	slices.Sort(keys)
	b.Queue(lockMessages, slices.Compact(keys))
	if len(m.provider) > 0 {
		b.Queue(ensureConversations, m.provider, m.channel, m.contact, m.name, m.sentAt)
		b.Queue(insertMessages, m.provider, m.id, m.channel, m.contact, m.direction, m.typ, m.sender, m.recipient,
			m.text, m.media, m.content, m.status, m.sentAt, m.eventID, m.traceparent)
	}
	if len(s.provider) > 0 {
		b.Queue(applyStatuses, s.provider, s.messageID, s.status, s.at, s.err, s.eventID, s.traceparent)
	}
	if len(m.provider) > 0 {
		b.Queue(touchConversations, m.provider, m.channel, m.contact, m.name, m.sentAt)
	}
	return nil
}

// messageCols holds a batch's messages as columns, the shape unnest takes.
type messageCols struct {
	provider, id, channel, contact, name, direction, typ, sender, recipient, text, media, status []string
	content, traceparent                                                                         []*string
	sentAt                                                                                       []time.Time
	eventID                                                                                      []int64
}

func (c *messageCols) add(ev claimed, m *provider.Message) error {
	media, err := json.Marshal(nonNil(m.Media))
	if err != nil {
		return err
	}
	c.provider = append(c.provider, ev.Provider)
	c.id = append(c.id, m.ID)
	c.channel = append(c.channel, m.Channel)
	c.contact = append(c.contact, m.Contact)
	c.name = append(c.name, m.ContactName)
	c.direction = append(c.direction, m.Direction)
	c.typ = append(c.typ, m.Type)
	c.sender = append(c.sender, m.Sender)
	c.recipient = append(c.recipient, m.Recipient)
	c.text = append(c.text, m.Text)
	c.media = append(c.media, string(media))
	c.content = append(c.content, jsonOrNil(m.Content))
	c.status = append(c.status, m.Status)
	c.sentAt = append(c.sentAt, m.SentAt)
	c.eventID = append(c.eventID, ev.ID)
	c.traceparent = append(c.traceparent, ev.Traceparent)
	return nil
}

// statusCols holds a batch's statuses as columns.
type statusCols struct {
	provider, messageID, status []string
	err, traceparent            []*string
	at                          []time.Time
	eventID                     []int64
}

func (c *statusCols) add(ev claimed, s *provider.Status) {
	c.provider = append(c.provider, ev.Provider)
	c.messageID = append(c.messageID, s.MessageID)
	c.status = append(c.status, s.Status)
	c.at = append(c.at, s.At)
	c.err = append(c.err, jsonOrNil(s.Error))
	c.eventID = append(c.eventID, ev.ID)
	c.traceparent = append(c.traceparent, ev.Traceparent)
}

func nonNil(m []provider.Media) []provider.Media {
	if m == nil {
		return []provider.Media{}
	}
	return m
}

// jsonOrNil passes raw JSON as text (NULL when empty); the SQL casts it to jsonb.
func jsonOrNil(raw json.RawMessage) *string {
	if len(raw) == 0 {
		return nil
	}
	s := string(raw)
	return &s
}
