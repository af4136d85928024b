---- tern: disable-tx ----
-- Erasure deletes a message's changes in the statement that deletes the message
-- (migration 018: the changes refer to it). An index on (conversation_id, message_id)
-- finds them by both; it replaces the index on conversation_id, whose one use (erasure
-- deleting the rest of a contact's changes) reads its prefix the same way, so an insert
-- still writes one entry here. Built CONCURRENTLY (see migration 003).
SET lock_timeout = '10s';

DROP INDEX CONCURRENTLY IF EXISTS changes_conversation_message;
CREATE INDEX CONCURRENTLY changes_conversation_message ON changes (conversation_id, message_id);
DROP INDEX CONCURRENTLY IF EXISTS changes_conversation;

RESET lock_timeout;

---- create above / drop below ----

CREATE INDEX changes_conversation ON changes (conversation_id);
DROP INDEX changes_conversation_message;
