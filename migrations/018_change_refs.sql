-- A message's changes refer to the message instead of copying it (docs/consumers.md).
--
-- message.created and message.status_changed carried the whole message as JSON (about
-- 450 bytes a change, the largest share of the WAL an event writes after the event
-- itself). A message's fields never change once it is stored except its status,
-- status_at and error, and erasure deletes a message together with its changes; so a
-- change now keeps only the message's id and those three fields as they were when it
-- happened, and internal/feed builds the object on read from the message and them.
-- The object served is the one a copy would have held.
--
-- Rows written before this migration keep their copy in data (a change has data or a
-- message_id, never neither); conversation.created and contact.erased still copy (their
-- objects are small, and a conversation's name and latest message time do change).
-- Adding nullable columns and a NOT VALID check rewrites and scans nothing.
SET LOCAL lock_timeout = '5s';

ALTER TABLE changes
    ALTER COLUMN data DROP NOT NULL,
    ADD COLUMN message_id bigint,
    ADD COLUMN status     text,
    ADD COLUMN status_at  timestamptz,
    ADD COLUMN error      jsonb,
    ADD CONSTRAINT changes_object CHECK (data IS NOT NULL OR message_id IS NOT NULL) NOT VALID;

---- create above / drop below ----

SET LOCAL lock_timeout = '5s';

-- Copy the objects back in before the columns go (a change whose message is gone has
-- nothing to copy: it goes too).
UPDATE changes ch
SET data = to_jsonb(m) - 'inbound_event_id'
           || jsonb_build_object('status', ch.status, 'status_at', ch.status_at, 'error', ch.error)
FROM messages m
WHERE ch.data IS NULL AND m.id = ch.message_id;
DELETE FROM changes WHERE data IS NULL;

ALTER TABLE changes
    DROP CONSTRAINT changes_object,
    DROP COLUMN message_id,
    DROP COLUMN status,
    DROP COLUMN status_at,
    DROP COLUMN error,
    ALTER COLUMN data SET NOT NULL;
