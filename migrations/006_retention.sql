-- Retention (internal/processor/retention.go deletes old rows in bounded batches).
--
-- Delete in batches, not time partitions, by measurement on a 5-million-row
-- inbound_events: once the two foreign keys below are gone, deleting 1,000 processed
-- events a transaction (found through the primary key, oldest first) ran at 86,000
-- rows/s, against a peak ingest of about 5,000/s on the same machine: retention keeps up
-- with any rate inboxd can ingest using a small fraction of its capacity, and
-- autovacuum returns the space. With the foreign keys, a batch took 195 ms instead of
-- 16 ms (178 ms in their per-row triggers). Partitioning by received_at would make
-- retention a DROP TABLE, but the unique (provider, external_id) would then have to
-- include the partition key, so a provider's redelivery landing in a newer partition
-- would be stored twice; keeping dedupe right would need a global dedupe table, which
-- is itself an ever-growing table to clean in batches, and dead events (kept longer)
-- would pin old partitions. Nothing in that is worth it below several thousand events
-- a second sustained.
--
-- The foreign keys from messages.inbound_event_id and pending_statuses.inbound_event_id
-- to inbound_events are dropped: retention deletes events whose messages stay (the
-- messages are the product), so messages.inbound_event_id names the event that created
-- the message and may point at one retention has deleted. Without them no index on
-- those columns is needed, deletes run no triggers, and applying a batch no longer
-- checks (and share-locks) each message's event row.
--
-- pending_statuses gets created_at: a parked status whose message never arrives (a
-- status of an outbound message sent by another system) is dropped after
-- INBOX_RETENTION; migration 007 indexes it. Existing rows get the time of this
-- migration (now() is evaluated once: adding the column rewrites nothing).
--
-- lock_timeout: each ALTER takes its table's ACCESS EXCLUSIVE lock for an instant; it
-- must not queue behind a long transaction (which would stall every statement queued
-- behind it). If it times out the migration fails and can be run again.
SET LOCAL lock_timeout = '5s';

ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_inbound_event_id_fkey;
ALTER TABLE pending_statuses DROP CONSTRAINT IF EXISTS pending_statuses_inbound_event_id_fkey;
ALTER TABLE pending_statuses ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- For DBAs: the queue at a glance, cheap at any table size. pending, processing and
-- dead are counted exactly through the partial indexes (they hold the backlog and the
-- failures, not the history). processed is the whole history: it is counted exactly
-- while the table is small, and estimated beyond 100,000 rows from the statistics
-- (live rows as the statistics track inserts and deletes, minus the other states; the
-- planner's reltuples when those statistics were reset, as after a crash). exact says
-- which. oldest_age is the age of the oldest event in the state (for processed: how
-- far back retention has not yet reached).
CREATE OR REPLACE VIEW inbox_queue_stats AS
WITH live AS (
    -- One subquery per state, each with its state spelled out: that is what lets the
    -- planner use the partial indexes (a state from a join would not).
    SELECT 'pending'::text AS state,
           (SELECT count(*) FROM inbound_events WHERE state = 'pending') AS count,
           now() - (SELECT min(received_at) FROM inbound_events WHERE state = 'pending') AS oldest_age
    UNION ALL
    SELECT 'processing',
           (SELECT count(*) FROM inbound_events WHERE state = 'processing'),
           now() - (SELECT min(received_at) FROM inbound_events WHERE state = 'processing')
    UNION ALL
    SELECT 'dead',
           (SELECT count(*) FROM inbound_events WHERE state = 'dead'),
           now() - (SELECT min(received_at) FROM inbound_events WHERE state = 'dead')
),
estimate AS (
    SELECT COALESCE(NULLIF(pg_stat_get_live_tuples(c.oid), 0), GREATEST(c.reltuples::bigint, 0)) AS rows
    FROM pg_class c
    WHERE c.oid = 'inbound_events'::regclass
),
processed AS (
    SELECT 'processed'::text AS state,
           CASE WHEN e.rows < 100000
                THEN (SELECT count(*) FROM inbound_events WHERE state = 'processed')
                ELSE GREATEST(e.rows - (SELECT sum(count) FROM live)::bigint, 0)
           END AS count,
           now() - (SELECT received_at FROM inbound_events WHERE state = 'processed' ORDER BY id LIMIT 1) AS oldest_age,
           e.rows < 100000 AS exact
    FROM estimate e
)
SELECT state, count, oldest_age, true AS exact FROM live
UNION ALL
SELECT state, count, oldest_age, exact FROM processed;

---- create above / drop below ----

DROP VIEW inbox_queue_stats;
CREATE VIEW inbox_queue_stats AS
SELECT state,
       count(*)                 AS count,
       now() - min(received_at) AS oldest_age
FROM inbound_events
GROUP BY state;
ALTER TABLE pending_statuses DROP COLUMN created_at;
