#!/usr/bin/env bash
# Runs inboxd and the River baseline through the same workloads on this machine, one
# after the other, and prints them side by side: the commit ceiling, drain events/s,
# and open-loop rate steps with end-to-end latency. Results land in bench/out/ as JSON,
# the latency chart in docs/bench-latency.svg.
#
#   bench/compare.sh                      # defaults below
#   EVENTS=50000 STEP=10s bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${INBOXD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
EVENTS=${EVENTS:-50000}      # drain backlog
STEP=${STEP:-10s}            # duration of each rate step
RAMP_START=${RAMP_START:-1000}
RAMP_STEP=${RAMP_STEP:-1000}
RAMP_MAX=${RAMP_MAX:-10000}
out=bench/out
mkdir -p "$out" docs

go build -o "$out/inboxd" ./cmd/inboxd
go build -o "$out/inboxd-bench" ./cmd/inboxd-bench
(cd bench/river && go build -o ../out/river-bench .)
B=("$out/inboxd-bench")

"${B[@]}" ceiling --database-url "$DB" --json > "$out/1-ceiling.json"
"${B[@]}" drain --inboxd "$out/inboxd" --database-url "$DB" --events "$EVENTS" --json > "$out/2-inboxd-drain.json"
"$out/river-bench" drain --database-url "$DB" --events "$EVENTS" --json > "$out/3-river-drain.json"
"$out/river-bench" drain --database-url "$DB" --events "$EVENTS" --work noop --json > "$out/4-river-noop-drain.json"
"${B[@]}" ramp --inboxd "$out/inboxd" --database-url "$DB" --duration "$STEP" --ramp-start "$RAMP_START" --ramp-step "$RAMP_STEP" --ramp-max "$RAMP_MAX" --json > "$out/5-inboxd-ramp.json"
"$out/river-bench" ramp --database-url "$DB" --duration "$STEP" --ramp-start "$RAMP_START" --ramp-step "$RAMP_STEP" --ramp-max "$RAMP_MAX" --json > "$out/6-river-ramp.json"
# River falls behind at the ramp's first step here; one step it sustains, for the chart.
"$out/river-bench" rate --database-url "$DB" --duration "$STEP" --rate 500 --json > "$out/7-river-rate500.json"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql "$DB" -Atc 'SHOW server_version' 2>/dev/null || echo 'PostgreSQL ?')"
"${B[@]}" report --svg docs/bench-latency.svg "$out"/*.json
