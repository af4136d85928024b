-- inbound_events.traceparent: the W3C trace context of the webhook request that stored
-- the event (its "send" span), written by internal/ingest when tracing is on. The
-- processor links each event's "process" span to it, so that the trace of a message
-- leads back to the webhook that carried it, across processes and retries (River's
-- otelriver keeps the same in a job's metadata). NULL when tracing is off.
--
-- A nullable column without a default changes only the catalog; lock_timeout keeps
-- the instant of ACCESS EXCLUSIVE it needs from queueing behind a long transaction.
SET LOCAL lock_timeout = '5s';

ALTER TABLE inbound_events ADD COLUMN traceparent text;

---- create above / drop below ----

ALTER TABLE inbound_events DROP COLUMN traceparent;
