-- A subscription to some providers only (internal/delivery, docs/consumers.md):
-- providers NULL is every provider; otherwise the provider names whose
-- conversations' changes it is sent, a provider's name taking in its named senders
-- ("generic" matches "generic:acme"), so that one sender's endpoint is not sent
-- another's messages. A new nullable column: a catalog change, no rewrite.
SET LOCAL lock_timeout = '5s';

ALTER TABLE subscriptions ADD COLUMN providers text[];

---- create above / drop below ----

ALTER TABLE subscriptions DROP COLUMN providers;
