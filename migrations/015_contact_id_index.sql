---- tern: disable-tx ----
-- The console lists a contact's events newest first; an index on (contact, id) reads
-- them in that order and stops after a page, where the index on contact alone had to
-- fetch and sort every event of the contact. It replaces that index (erasure and
-- export use its prefix the same way). Built CONCURRENTLY (see migration 003).
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS inbound_events_contact_id;
CREATE INDEX CONCURRENTLY inbound_events_contact_id ON inbound_events (contact, id) WHERE contact IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS inbound_events_contact;

RESET lock_timeout;

---- create above / drop below ----

CREATE INDEX inbound_events_contact ON inbound_events (contact) WHERE contact IS NOT NULL;
DROP INDEX inbound_events_contact_id;
