package bench

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// EraseContact is the contact FillContact stores.
const EraseContact = "+15557770000"

// fillContact stores $1 processed events of EraseContact, each with its message in
// one conversation, as the processor would have left them.
const fillContact = `
WITH conv AS (
    INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
    VALUES ('generic', '+15550001111', $2, now()) RETURNING id
),
events AS (
    INSERT INTO inbound_events (provider, external_id, state, attempts, run_at, received_at, processed_at, payload, headers, contact)
    SELECT 'generic', 'erase-' || g, 'processed', 1, now(), now(), now(),
           jsonb_build_object('type', 'message.received', 'timestamp', '2026-11-25T10:00:00Z',
               'data', jsonb_build_object('message_id', 'erase-m-' || g, 'channel', '+15550001111',
                   'contact', $2::text, 'text', 'hello, this is message ' || g || ' of the contact')),
           '{"Content-Type":"application/json"}', $2
    FROM generate_series(1, $1) AS g
    RETURNING id, payload->'data'->>'message_id' AS message_id
)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'generic', e.message_id, conv.id, 'inbound', $2, '+15550001111', 'hello', 'received', now(), e.id
FROM events e, conv`

// FillContact stores n messages (and their events) of EraseContact, then vacuums,
// analyzes and checkpoints, as FillHistory does.
func FillContact(ctx context.Context, pool *pgxpool.Pool, n int) error {
	if _, err := pool.Exec(ctx, fillContact, n, EraseContact); err != nil {
		return fmt.Errorf("fill %d messages of one contact: %w", n, err)
	}
	for _, sql := range []string{"VACUUM ANALYZE inbound_events, messages, conversations", "CHECKPOINT"} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}
