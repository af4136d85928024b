#!/usr/bin/env bash
# Runs inboxd, inboxd at batch size 1, and the River baseline in both its variants
# (bench/river) through the same workloads on this machine, one after the other, and
# prints them side by side: the commit ceiling; drain events/s and CPU per event (River
# at each MaxWorkers); River's own no-op burn-down; CPU per 1,000 events at fixed rates;
# and a ramp of open-loop rates with latency, to the highest within the SLO. Results
# land in bench/out/ (compare.json, bench-latency.svg), never in the tree: a local run
# leaves `git status` clean. RECORD=1 makes the run the run of record: its JSON and
# chart are copied into docs/ (docs/benchmarks.md cites them).
#
#   bench/compare.sh                                  # defaults below
#   EVENTS=20000 STEP=10s bench/compare.sh
#   INBOXD_BENCH_DATABASE_URL=postgres://… bench/compare.sh
#   RECORD=1 bench/compare.sh                         # update docs/ with the results
#
# Postgres must run on this machine for the CPU figures (they are read from /proc);
# bench/pgcluster.sh starts a throwaway one with the server's default settings.
set -euo pipefail
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} # the Go release go.mod asks for
cd "$(dirname "$0")/.."
DB=${INBOXD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
EVENTS=${EVENTS:-50000}        # drain backlog
STEP=${STEP:-15s}              # duration of each rate step
WORKERS=${WORKERS:-4,8,16,32,64}  # River MaxWorkers tried in the drain
out=bench/out
mkdir -p "$out"

go build -o "$out/inboxd" ./cmd/inboxd
go build -o "$out/inboxd-bench" ./cmd/inboxd-bench
(cd bench/river && go build -o ../out/river-bench .)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql "$DB" -Atc 'SHOW server_version' 2>/dev/null || echo 'PostgreSQL ?'), $(go version | cut -d' ' -f3)"
"$out/inboxd-bench" compare --database-url "$DB" --inboxd "$out/inboxd" --river "$out/river-bench" \
  --events "$EVENTS" --duration "$STEP" --max-workers "$WORKERS" --json > "$out/compare.json"
"$out/inboxd-bench" report --svg "$out/bench-latency.svg" "$out/compare.json"
if [ "${RECORD:-}" = 1 ]; then
  cp "$out/compare.json" docs/bench-compare.json
  cp "$out/bench-latency.svg" docs/bench-latency.svg
  echo "recorded: docs/bench-compare.json, docs/bench-latency.svg"
fi
