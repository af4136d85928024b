-- inbound_events: the durable queue. Owned by internal/ingest (inserts) and
-- internal/processor (state changes); internal/api reads it and requeues events.
--
-- A queue table churns: every row is inserted once and updated twice (claim, finish),
-- so design for bloat up front:
--  * fillfactor 70 leaves room on each heap page so a row's claim and finish updates
--    land on its own page (less page traffic and no extra visits to find free space).
--    The updates change `state`, which the partial index below covers, so they are not
--    HOT; what keeps index bloat down is that index staying tiny.
--  * inbound_events_due is a partial index over the rows that can still be claimed
--    (pending, processing). Finished rows leave it, so it holds the backlog, not the
--    history, and the claim query walks only live rows however large the table grows.
--  * autovacuum runs on this table after 1% of it changed (the default 20% lets dead
--    tuples pile up for hours on a big table), and analyze keeps the planner's picture
--    of the backlog fresh.
CREATE TABLE inbound_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider     text        NOT NULL,
    external_id  text        NOT NULL,
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'processing', 'processed', 'dead')),
    attempts     integer     NOT NULL DEFAULT 0,
    -- When the event is next due: for pending rows the (retry) schedule, for processing
    -- rows the end of the lease. One column for both keeps one claim index.
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    locked_by    text,
    last_error   text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    -- Request headers from an allow-list only (never signatures or credentials).
    headers      jsonb       NOT NULL DEFAULT '{}',
    payload      jsonb       NOT NULL,
    CONSTRAINT inbound_events_provider_external_id_key UNIQUE (provider, external_id)
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim index (see internal/processor/claim.go): due pending rows and expired
-- leases, ordered by when they are due.
CREATE INDEX inbound_events_due ON inbound_events (state, run_at)
    WHERE state IN ('pending', 'processing');

-- Dead events are few and operators list them (GET /v1/events?state=dead).
CREATE INDEX inbound_events_dead ON inbound_events (id) WHERE state = 'dead';

-- Every insert announces itself on channel inbound_events with {"id":N,"provider":"…"},
-- so `LISTEN inbound_events;` in psql shows each arrival. A statement-level trigger with
-- a transition table runs the function once per INSERT statement rather than once per
-- row: ingest inserts many events per statement, and this keeps the trigger's cost to
-- one pg_notify call per row with no per-row PL/pgSQL start-up. Notifications are
-- queued by the transaction and sent at commit, so listeners never see an event that
-- is not yet readable.
CREATE FUNCTION inbound_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inbound_events',
                      json_build_object('id', n.id, 'provider', n.provider)::text)
    FROM new_rows n;
    RETURN NULL;
END
$$;

CREATE TRIGGER inbound_events_notify
    AFTER INSERT ON inbound_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbound_events_notify();

-- For DBAs: how deep is the queue and how old is its oldest row, per state.
CREATE VIEW inbox_queue_stats AS
SELECT state,
       count(*)                 AS count,
       now() - min(received_at) AS oldest_age
FROM inbound_events
GROUP BY state;

---- create above / drop below ----

DROP VIEW inbox_queue_stats;
DROP TABLE inbound_events;
DROP FUNCTION inbound_events_notify();
