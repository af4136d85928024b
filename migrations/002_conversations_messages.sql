-- conversations, messages, pending_statuses: owned by internal/processor (it writes
-- them while normalizing events); internal/api reads them.

-- One conversation per (provider, our channel address, the contact's address). The
-- contact address is E.164 where the provider gives a number, else the provider's
-- user id (Meta's business-scoped user_id when the number is withheld).
CREATE TABLE conversations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text        NOT NULL,
    channel_address text        NOT NULL,
    contact_address text        NOT NULL,
    contact_name    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL,
    CONSTRAINT conversations_key UNIQUE (provider, channel_address, contact_address)
);

-- GET /v1/conversations: latest activity first, keyset on (last_message_at, id).
CREATE INDEX conversations_latest ON conversations (last_message_at DESC, id DESC);

-- Status ranks (docs/webhooks.md): a status applies only if it ranks above the current one, so
-- late or repeated callbacks never move a message backwards. failed and undelivered are
-- final outcomes and rank with delivered.
CREATE FUNCTION inbox_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'received'    THEN 0
        WHEN 'queued'      THEN 1
        WHEN 'accepted'    THEN 1
        WHEN 'sending'     THEN 2
        WHEN 'sent'        THEN 3
        WHEN 'delivered'   THEN 4
        WHEN 'failed'      THEN 4
        WHEN 'undelivered' THEN 4
        WHEN 'read'        THEN 5
        ELSE 0
    END
$$;

CREATE TABLE messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider            text        NOT NULL,
    provider_message_id text        NOT NULL,
    conversation_id     bigint      NOT NULL REFERENCES conversations (id),
    direction           text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    -- text, image, audio, video, document, location, interactive, reaction, unsupported…
    type                text        NOT NULL DEFAULT 'text',
    sender              text        NOT NULL,
    recipient           text        NOT NULL,
    text                text,
    media               jsonb       NOT NULL DEFAULT '[]',
    -- Type-specific detail (location, reaction, interactive reply) or, for messages of
    -- type unsupported, the provider's raw object: nothing is dropped.
    content             jsonb,
    status              text        NOT NULL,
    status_at           timestamptz,
    error               jsonb,
    sent_at             timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    inbound_event_id    bigint      NOT NULL REFERENCES inbound_events (id),
    CONSTRAINT messages_provider_message_id_key UNIQUE (provider, provider_message_id)
);

-- GET /v1/conversations/{id}/messages: by sent_at, then id.
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at, id);

-- A status that arrives before its message waits here and is applied when the message
-- is stored. Keyed by the event that carried it, so reprocessing that event
-- changes nothing.
CREATE TABLE pending_statuses (
    provider            text        NOT NULL,
    provider_message_id text        NOT NULL,
    inbound_event_id    bigint      NOT NULL REFERENCES inbound_events (id),
    status              text        NOT NULL,
    status_at           timestamptz NOT NULL,
    error               jsonb,
    PRIMARY KEY (provider, provider_message_id, inbound_event_id)
);

---- create above / drop below ----

DROP TABLE pending_statuses;
DROP TABLE messages;
DROP FUNCTION inbox_status_rank(text);
DROP TABLE conversations;
