---- tern: disable-tx ----
-- Lanes (docs/lanes.md): every event belongs to a lane, its stored provider and the
-- channel it was sent to ("meta/100000000000001"), and claims are fair across lanes.
-- Events stored before this migration, or inserted by hand, are in lane '' together.
--
-- The claim index becomes two: pending events by (lane, run_at), which a claim walks
-- lane by lane, and leases by run_at, which the sweep reads for expired ones. An event
-- is in at most one of them, so an insert still writes one queue index entry. Built
-- CONCURRENTLY (see migration 003); adding a column with a constant default rewrites
-- nothing.
SET lock_timeout = '10s';

ALTER TABLE inbound_events ADD COLUMN IF NOT EXISTS lane text NOT NULL DEFAULT '';

DROP INDEX CONCURRENTLY IF EXISTS inbound_events_lanes;
CREATE INDEX CONCURRENTLY inbound_events_lanes ON inbound_events (lane, run_at) WHERE state = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS inbound_events_leases;
CREATE INDEX CONCURRENTLY inbound_events_leases ON inbound_events (run_at) WHERE state = 'processing';
DROP INDEX CONCURRENTLY IF EXISTS inbound_events_due;

RESET lock_timeout;

---- create above / drop below ----

CREATE INDEX inbound_events_due ON inbound_events (state, run_at) WHERE state IN ('pending', 'processing');
DROP INDEX inbound_events_leases;
DROP INDEX inbound_events_lanes;
ALTER TABLE inbound_events DROP COLUMN lane;
