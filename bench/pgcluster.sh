#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for measurements that need the server's defaults
# (autovacuum on, among others) when the machine's own server is configured otherwise.
#
#   bench/pgcluster.sh start DIR [PORT]   # initdb + start; prints the connection URL
#   bench/pgcluster.sh stop DIR           # stop and delete DIR
set -euo pipefail
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} # the Go release go.mod asks for
cmd=${1:?usage: pgcluster.sh start DIR [PORT] | stop DIR}
dir=${2:?usage: pgcluster.sh start DIR [PORT] | stop DIR}
port=${3:-55433}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
  mkdir -p "$dir" && chmod 777 "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  ;;
stop)
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null || true
  rm -rf "$dir"
  ;;
*) echo "usage: pgcluster.sh start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
