---- tern: disable-tx ----
-- Erasure and export find a contact's events by inbound_events.contact (migration
-- 010). Partial: only events that were read carry a contact, and an event's first
-- claim (before it was read) adds no entry. Built CONCURRENTLY (see migration 003).
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS inbound_events_contact;
CREATE INDEX CONCURRENTLY inbound_events_contact ON inbound_events (contact) WHERE contact IS NOT NULL;

RESET lock_timeout;

---- create above / drop below ----

DROP INDEX inbound_events_contact;
