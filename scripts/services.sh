#!/usr/bin/env bash
# Throwaway Postgres and Redis for the scale-out tests (service/tests/scaleout.rs).
#
#   scripts/services.sh [start]   install redis-server if missing, start both (idempotent),
#                                 print LINKR_TEST_DATABASE_URL=... and LINKR_TEST_REDIS_URL=...
#                                 and write them as exports to $STATE/env (source it)
#   scripts/services.sh stop      stop both and remove their data
#   scripts/services.sh stop-redis | start-redis | stop-postgres | start-postgres | restart-postgres
#                                 fault injection (service/tests/reliability_faults.rs): stop or
#                                 start one of them on the same port, keeping its data; each
#                                 returns once the service is down or answering
#
# Loopback only, free ports, trust auth, no persistence (fsync off, Redis without RDB/AOF).
# State lives in $LINKR_SERVICES_DIR (default /tmp/linkr-services).
set -euo pipefail

STATE=${LINKR_SERVICES_DIR:-/tmp/linkr-services}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ENV_FILE=$STATE/env

# Postgres refuses to run as root: run its tools as the `postgres` user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg_running() {
    [ -f "$STATE/pg/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1
}

redis_running() {
    [ -f "$STATE/redis.port" ] && redis-cli -h 127.0.0.1 -p "$(cat "$STATE/redis.port")" ping >/dev/null 2>&1
}

pg_start() {
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $(cat "$STATE/pg.port") -k $STATE/pg -c fsync=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { tail -20 "$STATE/pg/postgres.log" >&2; exit 1; }
}

pg_stop() {
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w -t 30 stop >/dev/null
}

redis_start() {
    redis-server --bind 127.0.0.1 --port "$(cat "$STATE/redis.port")" --save '' --appendonly no \
        --daemonize yes --dir "$STATE" --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log"
    for _ in $(seq 100); do
        redis_running && return
        sleep 0.1
    done
    tail -20 "$STATE/redis.log" >&2
    exit 1
}

redis_stop() {
    redis-cli -h 127.0.0.1 -p "$(cat "$STATE/redis.port")" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        redis_running || return 0
        sleep 0.1
    done
    echo "redis did not stop" >&2
    exit 1
}

need_state() {
    [ -f "$STATE/pg.port" ] && [ -f "$STATE/redis.port" ] \
        || { echo "no services in $STATE: run $0 start first" >&2; exit 2; }
}

stop() {
    if [ -d "$STATE/pg/data" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if redis_running; then
        redis-cli -h 127.0.0.1 -p "$(cat "$STATE/redis.port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE"
    echo "services stopped"
}

start() {
    if pg_running && redis_running && [ -f "$ENV_FILE" ]; then
        sed 's/^export //' "$ENV_FILE"
        return
    fi
    # Half-started state from an earlier run: start over.
    [ -d "$STATE" ] && stop >/dev/null
    if ! command -v redis-server >/dev/null; then
        echo "installing redis-server" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
    fi
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "installing postgresql" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "Postgres binaries not found in $PG_BIN (set PG_BIN)" >&2
        exit 2
    fi
    mkdir -p "$STATE/pg"
    chmod 755 "$STATE"
    [ "$(id -u)" = 0 ] && chown postgres "$STATE/pg"

    local pg_port redis_port
    pg_port=$(free_port)
    echo "$pg_port" >"$STATE/pg.port"
    as_pg "$PG_BIN/initdb" -D "$STATE/pg/data" -U postgres -A trust --no-sync >"$STATE/pg/initdb.log" 2>&1 \
        || { cat "$STATE/pg/initdb.log" >&2; exit 1; }
    pg_start

    redis_port=$(free_port)
    echo "$redis_port" >"$STATE/redis.port"
    redis_start

    cat >"$ENV_FILE" <<EOF
export LINKR_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
export LINKR_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/
EOF
    sed 's/^export //' "$ENV_FILE"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    stop-redis) need_state; redis_stop ;;
    start-redis) need_state; redis_start ;;
    stop-postgres) need_state; pg_stop ;;
    start-postgres) need_state; pg_start ;;
    restart-postgres) need_state; pg_stop; pg_start ;;
    *)
        echo "usage: $0 [start|stop|stop-redis|start-redis|stop-postgres|start-postgres|restart-postgres]" >&2
        exit 2
        ;;
esac
