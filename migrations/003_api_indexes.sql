-- Indexes for the read and admin API (internal/api).

-- GET /v1/conversations?contact=…: a contact's conversations, latest first.
CREATE INDEX conversations_contact ON conversations (contact_address, last_message_at DESC, id DESC);

-- GET /v1/stats counts what arrived in the last minute (and, among those received in
-- the last hour, what was processed). received_at follows insertion order, so a BRIN
-- index answers time windows from a few pages of summaries and costs next to nothing
-- to maintain, unlike a B-tree that every claim and finish update would add to.
CREATE INDEX inbound_events_received_brin ON inbound_events USING brin (received_at);

---- create above / drop below ----

DROP INDEX inbound_events_received_brin;
DROP INDEX conversations_contact;
