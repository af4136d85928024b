#!/usr/bin/env bash
# How many bytes of WAL the event's own row and the queue's bookkeeping write per
# event, under the shipped layout and under layouts that would make the finish a HOT
# update, for inboxd's path (stored claimed by ingest, then finished) and for River
# batched's (stored pending, then marked done by the job). The apply (messages,
# conversations, changes), which both systems share, is left out: this is the part
# of WAL per event that the queue's design decides (docs/benchmarks.md, "What is
# left").
#
#   bench/queue-wal.sh [DATABASE_URL]     # a database on the server; default: the local server's postgres
#   BATCHES=1000 bench/queue-wal.sh       # more events (default 300 batches)
#
# It makes a database inboxd_queue_wal (dropped at the end), migrates it with inboxd,
# and for each layout copies inbound_events' columns into a table of its own with
# that layout's indexes, writes BATCHES batches of 64 events in the two transactions
# the path has (ingest's commit, then the finish's), and divides the WAL written by
# the events. Rows are the bench's webhooks: a generic message.received with its
# headers, request id, trace context and contact.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} # the Go release go.mod asks for
cd "$(dirname "$0")/.."
base=${1:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
batches=${BATCHES:-300}
db=inboxd_queue_wal
url=$(sed -E "s#/[^/?]*(\?|\$)#/$db\1#" <<< "$base") # the same server, database $db

psql "$base" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
trap 'psql "$base" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
DATABASE_URL=$url INBOX_MIGRATE=true go run ./cmd/inboxd migrate >/dev/null

# The layouts. Each makes the table ev (inbound_events' columns and defaults), and
# for inboxd's HOT layout the table of per-batch leases.
shipped="CREATE TABLE ev (LIKE inbound_events INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE ev ADD PRIMARY KEY (id), ADD UNIQUE (provider, external_id);
CREATE INDEX ON ev (contact, id) WHERE contact IS NOT NULL;
CREATE INDEX ON ev (id) WHERE state = 'dead';
CREATE INDEX ON ev (lane, run_at) WHERE state = 'pending';
CREATE INDEX ON ev (run_at) WHERE state = 'processing';
CREATE INDEX ON ev USING brin (received_at);"
# No index mentions a column the finish changes: pending and dead events are found
# through columns generated from state, which the finish from processing to
# processed leaves as they were; leases live in a table of their own (one row per
# claim); the contact is written at insert.
# fillfactor leaves each page room for its rows' finished versions.
hot="CREATE TABLE ev (LIKE inbound_events INCLUDING DEFAULTS INCLUDING IDENTITY) WITH (fillfactor = 50);
ALTER TABLE ev ADD PRIMARY KEY (id), ADD UNIQUE (provider, external_id),
    ADD is_pending boolean GENERATED ALWAYS AS (state = 'pending') STORED,
    ADD is_dead boolean GENERATED ALWAYS AS (state = 'dead') STORED;
CREATE INDEX ON ev (contact, id) WHERE contact IS NOT NULL;
CREATE INDEX ON ev (id) WHERE is_dead;
CREATE INDEX ON ev (lane, run_at) WHERE is_pending;
CREATE INDEX ON ev USING brin (received_at);
CREATE TABLE leases (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, locked_by text NOT NULL,
                     locked_until timestamptz NOT NULL, events bigint[] NOT NULL);
CREATE INDEX ON leases (locked_until);"
# River batched's events need no queue index: River's job table is its queue.
river_hot="CREATE TABLE ev (LIKE inbound_events INCLUDING DEFAULTS INCLUDING IDENTITY) WITH (fillfactor = 50);
ALTER TABLE ev ADD PRIMARY KEY (id), ADD UNIQUE (provider, external_id);
CREATE INDEX ON ev (contact, id) WHERE contact IS NOT NULL;
CREATE INDEX ON ev USING brin (received_at);"

# insert STATE CONTACT: one batch of 64 events as ingest stores them, claimed by this
# process (STATE processing) or pending; CONTACT says whether the contact is stored
# at insert. :b numbers the batch.
insert() {
  local claimed=false; [ "$1" = processing ] && claimed=true
  cat <<SQL
INSERT INTO ev (provider, external_id, payload, headers, request_id, traceparent, lane,
                state, attempts, run_at, locked_until, locked_by, contact)
SELECT 'generic', 'evt_' || :b || '_' || g, p, '{"content-type": "application/json", "user-agent": "inboxd-bench"}',
       'req-' || md5(:b || '-' || g), '00-' || md5(g::text) || substr(md5(:b::text), 1, 16) || '-01', '',
       '$1', CASE WHEN $claimed THEN 1 ELSE 0 END, now() + CASE WHEN $claimed THEN interval '30 s' ELSE '0' END,
       CASE WHEN $claimed THEN now() + interval '30 s' END, CASE WHEN $claimed THEN 'host-4242' END,
       CASE WHEN $2 THEN p->'data'->>'contact' END
FROM generate_series(1, 64) g,
     LATERAL (SELECT jsonb_build_object('type', 'message.received', 'timestamp', '2026-11-25T10:00:00Z', 'data',
              jsonb_build_object('message_id', 'm-' || :b || '-' || g, 'channel', '+15550001111',
                                 'contact', '+1555' || lpad((g * 7919 % 10000000)::text, 7, '0'),
                                 'text', 'hello, this is message ' || g || ' of the benchmark'))) AS x(p)
SQL
}
batch="(SELECT max(id) - 64 FROM ev)"
# inboxd's finish as the processor writes it (fenced by state and holder).
finish="UPDATE ev e SET state = 'processed', processed_at = clock_timestamp(), locked_until = NULL, locked_by = NULL,
    contact = COALESCE(e.payload->'data'->>'contact', e.contact)
WHERE e.id > $batch AND e.state = 'processing' AND e.locked_by = 'host-4242' AND e.attempts = 1;"
# River batched's markDone: the attempt is counted here, there being no claim.
mark_done="UPDATE ev e SET state = 'processed', attempts = e.attempts + 1, processed_at = clock_timestamp(),
    contact = COALESCE(e.payload->'data'->>'contact', e.contact)
WHERE e.id > $batch AND e.state IN ('pending', 'processing');"

# measure NAME LAYOUT INGEST FINISH: bytes of WAL per event over $batches batches.
measure() {
  local script=/tmp/queue-wal.$$.sql
  for b in $(seq 1 "$batches"); do
    echo "\\set b $b"
    echo "BEGIN;"; echo "$3;"; echo "COMMIT;"
    echo "BEGIN;"; echo "$4"; echo "COMMIT;"
  done > "$script"
  psql "$url" -qc "DROP TABLE IF EXISTS ev, leases" -c "$2" -c CHECKPOINT
  local start; start=$(psql "$url" -Atc "SELECT pg_current_wal_lsn()")
  psql "$url" -q -f "$script" > /dev/null
  local wal; wal=$(psql "$url" -Atc "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$start') / ($batches * 64.0))")
  psql "$url" -qc "VACUUM ev"
  psql "$url" -At -v name="$1" <<SQL
SELECT format('%-46s %6s %12s %14s', :'name', $wal, n_tup_hot_upd || ' of ' || n_tup_upd,
       round(pg_relation_size('ev') / ($batches * 64.0)))
FROM pg_stat_user_tables WHERE relname = 'ev'
SQL
  rm -f "$script"
}

echo "$batches batches of 64 events, PostgreSQL $(psql "$url" -Atc 'SHOW server_version')"
printf '%-46s %6s %12s %14s\n' layout "WAL B/event" "HOT updates" "heap B/event"
measure "the event's insert alone (a floor)" "$shipped" "$(insert processed true)" "SELECT 1;"
measure "inboxd as shipped" "$shipped" "$(insert processing false)" "$finish"
measure "River batched as in the comparison" "$shipped" "$(insert pending false)" "$mark_done"
measure "inboxd, HOT finish (per-claim leases)" "$hot" \
  "WITH ins AS ($(insert processing true) RETURNING id)
   INSERT INTO leases (locked_by, locked_until, events) SELECT 'host-4242', now() + interval '30 s', array_agg(id) FROM ins" \
  "${finish/COALESCE(e.payload->'data'->>'contact', e.contact)/e.contact}
   DELETE FROM leases WHERE id = (SELECT max(id) FROM leases);"
measure "River batched, HOT finish (no queue indexes)" "$river_hot" "$(insert pending true)" \
  "${mark_done/COALESCE(e.payload->'data'->>'contact', e.contact)/e.contact}"
