-- inbound_events.request_id: the X-Request-Id of the webhook request that stored the
-- event (the same id is in the response's header and on the request's log lines), so
-- that an operator can go from a provider's delivery log to the event. Owned by
-- internal/ingest, which writes it with the row.
--
-- Adding a nullable column without a default changes only the catalog, but it still
-- takes the table's ACCESS EXCLUSIVE lock for that instant: lock_timeout keeps it from
-- queueing behind a long transaction, which would stall every insert queued behind it.
-- If it times out, the migration fails and can be run again.
SET LOCAL lock_timeout = '5s';

ALTER TABLE inbound_events ADD COLUMN request_id text;

---- create above / drop below ----

ALTER TABLE inbound_events DROP COLUMN request_id;
