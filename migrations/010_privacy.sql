-- Erasure and export of a contact's data (internal/privacy owns erasures; the
-- processor writes inbound_events.contact, docs/privacy.md has the guarantees).
--
-- inbound_events.contact: the contact address (as conversations.contact_address
-- spells it) of an event that was read, written by the processor when it records the
-- outcome, in the same UPDATE (no extra write). It ties every event to the person it
-- is about, statuses included, so that erasure and export find a contact's events
-- through an index instead of reading payloads. It repeats what the payload holds and
-- goes with it: erasure clears both.
--
-- inbound_events.erased_at: set when erasure emptied the event's payload. The row
-- stays, as a tombstone, until retention: a provider's late redelivery of the event
-- still meets the unique (provider, external_id) and is answered duplicate:true, so
-- nothing erased comes back. A tombstone is never replayed.
--
-- Adding nullable columns without a default rewrites nothing (an instant change).
SET LOCAL lock_timeout = '5s';

ALTER TABLE inbound_events ADD COLUMN contact text, ADD COLUMN erased_at timestamptz;

-- One row per erasure request: its receipt. The address is kept only while the
-- erasure runs (the runner needs it, and another process may have to resume the
-- work after a crash); once done, only its keyed hash (contact_hash) remains, which
-- proves what was erased to someone who knows the address, and tells nobody else.
CREATE TABLE erasures (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact      text,
    contact_hash text        NOT NULL,
    provider     text,
    state        text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    counts       jsonb       NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    locked_by    text,
    locked_until timestamptz,
    CHECK ((state = 'running') = (contact IS NOT NULL))
);

CREATE INDEX erasures_running ON erasures (id) WHERE state = 'running';
CREATE INDEX erasures_contact_hash ON erasures (contact_hash);

-- The key of contact_hash: random, made here once per database, so that a receipt's
-- hash cannot be reversed by hashing every phone number without it.
CREATE TABLE inbox_keys (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO inbox_keys (name, value)
VALUES ('erasure', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

---- create above / drop below ----

DROP TABLE inbox_keys;
DROP TABLE erasures;
ALTER TABLE inbound_events DROP COLUMN erased_at, DROP COLUMN contact;
