-- The change feed's horizon (docs/consumers.md): the last change (xid, seq) that
-- retention deleted. internal/processor's retention moves it forward in the statement
-- that deletes changes; internal/feed refuses a cursor before it (410 cursor_expired),
-- since a follower there may have missed changes that are gone, where it used to
-- resume at the oldest change kept without a word. One row at most; none until
-- retention first deletes a change (what retention deleted before this migration is
-- not known, and not flagged). An erasure's deletions do not move it: they are
-- replaced by contact.erased.
CREATE TABLE changes_horizon (
    one bool NOT NULL DEFAULT true PRIMARY KEY CHECK (one),
    xid xid8   NOT NULL,
    seq bigint NOT NULL
);

---- create above / drop below ----

DROP TABLE changes_horizon;
