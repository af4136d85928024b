---- tern: disable-tx ----
-- An erasure, its dry run and a subject's export find the statuses a contact's events
-- parked by the event (inbound_event_id). Without this index each of them read
-- pending_statuses whole: where outbound messages never reach inboxd, every status
-- callback waits there for INBOX_RETENTION, millions of rows (docs/privacy.md).
-- Built CONCURRENTLY, outside a transaction, as migration 007: it never blocks the
-- processor's writes, and a failed build leaves an INVALID index that the DROP removes
-- when this runs again.
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS pending_statuses_event;
CREATE INDEX CONCURRENTLY pending_statuses_event ON pending_statuses (inbound_event_id);

RESET lock_timeout;

---- create above / drop below ----

DROP INDEX pending_statuses_event;
