---- tern: disable-tx ----
-- Indexes for the read and admin API (internal/api).
--
-- Built CONCURRENTLY, outside a transaction (the line above tells tern), because they
-- may be added to tables that already hold data: a plain CREATE INDEX blocks every
-- insert into its table until it finishes, and ingest must keep answering. A
-- concurrent build that fails (lock_timeout, a crash) leaves an INVALID index behind,
-- so each build first drops what a failed run may have left; rerunning the migration
-- is always safe. lock_timeout bounds how long a build waits for the transactions
-- before it; past it the migration fails and can simply be run again.
SET lock_timeout = '10s';

-- GET /v1/conversations?contact=…: a contact's conversations, latest first.
DROP INDEX CONCURRENTLY IF EXISTS conversations_contact;
CREATE INDEX CONCURRENTLY conversations_contact ON conversations (contact_address, last_message_at DESC, id DESC);

-- GET /v1/stats counts what arrived in the last minute (and, among those received in
-- the last hour, what was processed). received_at follows insertion order, so a BRIN
-- index answers time windows from a few pages of summaries and costs next to nothing
-- to maintain, unlike a B-tree that every claim and finish update would add to.
DROP INDEX CONCURRENTLY IF EXISTS inbound_events_received_brin;
CREATE INDEX CONCURRENTLY inbound_events_received_brin ON inbound_events USING brin (received_at);

RESET lock_timeout;

---- create above / drop below ----

DROP INDEX inbound_events_received_brin;
DROP INDEX conversations_contact;
