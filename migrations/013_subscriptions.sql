-- Outbound webhooks (docs/consumers.md), owned by internal/delivery: subscriptions
-- and the deliveries of changes (migration 012) to them.
--
-- Fan-out copies each change a subscription wants into deliveries, reading the feed
-- after the subscription's cursor with the feed's watermark (internal/feed), so it
-- never skips a change that committed late. A delivery's body is the change itself,
-- joined at send time: nothing personal is copied, and a change deleted by erasure or
-- retention takes its deliveries with it (ON DELETE CASCADE).
--
-- Order per conversation: of a subscription's undelivered deliveries in one
-- conversation only the oldest is 'pending' (claimable); the others are 'waiting'
-- until it is delivered or dead, when the next is promoted. Fan-out and finish
-- serialize on a transaction advisory lock per (subscription, conversation), so a
-- promotion and an insert cannot miss each other.
--
--   waiting ──promote──▶ pending ──claim──▶ delivering ──▶ delivered | pending (retry) | dead
--   delivering ──lease expired──▶ pending;  delivered | dead ──replay──▶ waiting | pending
SET LOCAL lock_timeout = '5s';

CREATE TABLE subscriptions (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url           text        NOT NULL,
    types         text[]      NOT NULL,
    -- whsec_<base64>: the key consumers verify signatures with. Kept as is because
    -- every delivery is signed with it; the API shows it once, at creation.
    secret        text        NOT NULL,
    state         text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The last change fan-out has considered (the feed's cursor; 0.0 is the start).
    cursor_xid    xid8        NOT NULL,
    cursor_seq    bigint      NOT NULL,
    -- The circuit breaker: failed attempts in a row, and until when the endpoint is
    -- left alone after the last of them (NULL: closed).
    failures      integer     NOT NULL DEFAULT 0,
    blocked_until timestamptz
);

CREATE TABLE deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint      NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    change_xid      xid8        NOT NULL,
    change_seq      bigint      NOT NULL,
    conversation_id bigint      NOT NULL,
    state           text        NOT NULL CHECK (state IN ('waiting', 'pending', 'delivering', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL DEFAULT now(),
    -- When the give-up clock started: fan-out, a replay, or a resume.
    since           timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    FOREIGN KEY (change_xid, change_seq) REFERENCES changes (xid, seq) ON DELETE CASCADE,
    UNIQUE (change_xid, change_seq, subscription_id)
);

-- Claims: due pending deliveries of a subscription, oldest first.
CREATE INDEX deliveries_due ON deliveries (subscription_id, run_at) WHERE state = 'pending';
-- Leases: deliveries in flight (run_at is the lease's end), counted per subscription
-- by claims and rescued by the sweep when their lease has ended.
CREATE INDEX deliveries_leases ON deliveries (subscription_id, run_at) WHERE state = 'delivering';
-- Give-up: undelivered deliveries by when their clock started, so that the sweep
-- reads only the expired ones.
CREATE INDEX deliveries_since ON deliveries (since) WHERE state IN ('waiting', 'pending');
-- Order per conversation: the head of a (subscription, conversation), at most one
-- row (two after a replay), and the waiting ones behind it in feed order, so that a
-- finish finds the next without reading the conversation's backlog.
CREATE INDEX deliveries_head ON deliveries (subscription_id, conversation_id) WHERE state IN ('pending', 'delivering');
CREATE INDEX deliveries_waiting ON deliveries (subscription_id, conversation_id, change_xid, change_seq) WHERE state = 'waiting';
-- Listing by state, newest first (GET /v1/subscriptions/{id}/deliveries?state=).
CREATE INDEX deliveries_listing ON deliveries (subscription_id, state, id);

---- create above / drop below ----

DROP TABLE deliveries;
DROP TABLE subscriptions;
