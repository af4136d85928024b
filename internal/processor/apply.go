package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// lockKey orders the locks a normalized event takes.
type lockKey struct {
	conversation string // empty for statuses: they lock no conversation
	message      string
}

// Lock discipline (why many workers on one conversation never deadlock):
//  1. Before applying a batch, its transaction takes a transaction-scoped advisory lock
//     per (provider, message id), all at once, in ascending order. A message and the
//     statuses about it are thus serialized: the status sees the message or the message
//     sees the pending status, never neither (the race a plain UPDATE-or-park has).
//  2. It then applies messages in (channel, contact, message id) order, so conversation
//     row locks (taken by the upsert) are also acquired in one global order.
// Every transaction acquires advisory locks before any row lock and each kind in
// ascending order, so no cycle of waits can form.

const lockMessages = `SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)`

// messageLockID hashes (provider, message id) into the advisory lock space.
func messageLockID(provider, messageID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(provider))
	h.Write([]byte{0})
	h.Write([]byte(messageID))
	return int64(h.Sum64())
}

func lockBatch(ctx context.Context, tx dbtx, keys []int64) error {
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if _, err := tx.Exec(ctx, lockMessages, keys); err != nil {
		return fmt.Errorf("lock messages: %w", err)
	}
	return nil
}

// applyOrder sorts a batch into lock order: messages by conversation then id, then
// statuses by message id. Indexes whose normalization failed go last (they apply
// nothing).
func applyOrder(norms []Normalized, errs []error) []int {
	order := make([]int, len(norms))
	for i := range order {
		order[i] = i
	}
	rank := func(i int) (int, lockKey) {
		switch {
		case errs[i] != nil:
			return 2, lockKey{}
		case norms[i].Message != nil:
			return 0, norms[i].key()
		default:
			return 1, norms[i].key()
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ra, ka := rank(a)
		rb, kb := rank(b)
		if ra != rb {
			return ra - rb
		}
		if c := strings.Compare(ka.conversation, kb.conversation); c != 0 {
			return c
		}
		return strings.Compare(ka.message, kb.message)
	})
	return order
}

// insertMessage stores a message and its conversation in one statement. The
// conversation upsert is idempotent (last_message_at only moves forward); statuses
// that arrived before the message are taken out of pending_statuses and the best of
// them (by rank) is applied as the message is inserted. ON CONFLICT DO NOTHING makes
// a reprocessed event change nothing.
const insertMessage = `
WITH conv AS (
    INSERT INTO conversations (provider, channel_address, contact_address, contact_name, last_message_at)
    VALUES ($1, $2, $3, NULLIF($4, ''), $5)
    ON CONFLICT (provider, channel_address, contact_address) DO UPDATE
    SET last_message_at = GREATEST(conversations.last_message_at, EXCLUDED.last_message_at),
        contact_name    = COALESCE(EXCLUDED.contact_name, conversations.contact_name)
    RETURNING id
),
parked AS (
    DELETE FROM pending_statuses
    WHERE provider = $1 AND provider_message_id = $6
    RETURNING status, status_at, error
),
best AS (
    SELECT status, status_at, error FROM parked
    WHERE inbox_status_rank(status) > inbox_status_rank($13)
    ORDER BY inbox_status_rank(status) DESC, status_at DESC
    LIMIT 1
)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, type, sender, recipient,
                      text, media, content, status, status_at, error, sent_at, inbound_event_id)
SELECT $1, $6, conv.id, $7, $8, $9, $10, NULLIF($11, ''), $12::jsonb, $14::jsonb,
       COALESCE(best.status, $13), COALESCE(best.status_at, $5), best.error, $5, $15::bigint
FROM conv LEFT JOIN best ON true
ON CONFLICT (provider, provider_message_id) DO NOTHING`

// applyStatus moves a message's status forward, or parks the status until the
// message arrives. A status of lower or equal rank changes nothing.
const applyStatus = `
WITH target AS (
    SELECT id, status FROM messages WHERE provider = $1 AND provider_message_id = $2
),
moved AS (
    UPDATE messages m
    SET status = $3, status_at = $4::timestamptz, error = COALESCE($5::jsonb, m.error)
    FROM target
    WHERE m.id = target.id AND inbox_status_rank($3) > inbox_status_rank(target.status)
)
INSERT INTO pending_statuses (provider, provider_message_id, inbound_event_id, status, status_at, error)
SELECT $1, $2, $6::bigint, $3, $4::timestamptz, $5::jsonb
WHERE NOT EXISTS (SELECT 1 FROM target)
ON CONFLICT DO NOTHING`

// apply writes one normalized event.
func apply(ctx context.Context, tx dbtx, ev claimed, n Normalized) error {
	if m := n.Message; m != nil {
		media, err := json.Marshal(nonNil(m.Media))
		if err != nil {
			return fmt.Errorf("encode media: %w", err)
		}
		_, err = tx.Exec(ctx, insertMessage,
			ev.Provider, m.Channel, m.Contact, m.ContactName, m.SentAt, m.ID,
			m.Direction, m.Type, m.Sender, m.Recipient, m.Text, media, m.Status, jsonOrNil(m.Content), ev.ID)
		if err != nil {
			return fmt.Errorf("insert message %s: %w", m.ID, err)
		}
		return nil
	}
	s := n.Status
	if _, err := tx.Exec(ctx, applyStatus, ev.Provider, s.MessageID, s.Status, s.At, jsonOrNil(s.Error), ev.ID); err != nil {
		return fmt.Errorf("apply status %s of %s: %w", s.Status, s.MessageID, err)
	}
	return nil
}

func nonNil(m []Media) []Media {
	if m == nil {
		return []Media{}
	}
	return m
}

// jsonOrNil passes raw JSON as a string (NULL when empty) so pgx sends it as jsonb text.
func jsonOrNil(raw json.RawMessage) *string {
	if len(raw) == 0 {
		return nil
	}
	s := string(raw)
	return &s
}
