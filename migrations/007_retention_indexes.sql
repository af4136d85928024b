---- tern: disable-tx ----
-- Retention finds parked statuses by age (migration 006). Built CONCURRENTLY, outside
-- a transaction, so that it never blocks the processor's writes to pending_statuses;
-- a failed build leaves an INVALID index, which the DROP removes when this runs again.
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS pending_statuses_created;
CREATE INDEX CONCURRENTLY pending_statuses_created ON pending_statuses (created_at);

RESET lock_timeout;

---- create above / drop below ----

DROP INDEX pending_statuses_created;
