-- The change feed (docs/consumers.md): internal/processor writes changes in the
-- transaction that applies an event; internal/feed reads them (GET /v1/changes, the
-- stream).
--
-- changes: one row per change, in the applying transaction, so that a change is
-- visible exactly when what it describes is, and none is lost once that commits.
-- xid is the writing transaction's id. A reader returns only changes whose xid is
-- below its snapshot's xmin (every transaction with a smaller xid has ended), in
-- (xid, seq) order, and resumes after the last (xid, seq) it returned: a transaction
-- that took its xid first but commits last holds the reader back until it commits,
-- instead of being skipped (internal/feed has the proof). data is the object as the API
-- serves it when the change was made (a conversation or a message; contact.erased:
-- the erasure and conversation).
SET LOCAL lock_timeout = '5s';

CREATE TABLE changes (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    xid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    type            text        NOT NULL,
    conversation_id bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    data            jsonb       NOT NULL,
    -- The trace context of the webhook behind the change, so that what is done with
    -- the change later can join the webhook's trace.
    traceparent     text,
    PRIMARY KEY (xid, seq)
);

-- Erasure deletes a contact's changes by conversation; retention by age (BRIN: time
-- follows insertion).
CREATE INDEX changes_conversation ON changes (conversation_id);
CREATE INDEX changes_occurred ON changes USING brin (occurred_at);

-- No trigger notifies of new changes: a NOTIFY in the apply transaction would make
-- its commit take the server-wide notification lock, which ingest's commits hold
-- while they flush the WAL, and the processor's commits would queue behind them
-- (measured: e2e p99 at 1,000 events/s doubled). The processor notifies
-- inbox_changes after its commits instead (internal/processor, notifyChanges).

---- create above / drop below ----

DROP TABLE changes;
