---- tern: disable-tx ----
-- GET /v1/conversations?provider=… (and the console's provider filter): a provider's
-- conversations, latest first, read in order. Without it the list walked
-- conversations_latest and skipped every other provider's conversations, which for a
-- provider with few of them read the whole index: 200 ms on a million conversations,
-- growing with the table. readmodel lists each stored name (a provider's named
-- senders, "generic:acme", are names of their own) from this index in order.
--
-- Built CONCURRENTLY, outside a transaction, for the reason 003 gives: ingest and
-- the processor must keep writing conversations while it builds. A failed build
-- leaves an INVALID index, which the DROP first removes; rerunning is safe.
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS conversations_provider;
CREATE INDEX CONCURRENTLY conversations_provider ON conversations (provider, last_message_at DESC, id DESC);

RESET lock_timeout;

---- create above / drop below ----

DROP INDEX conversations_provider;
