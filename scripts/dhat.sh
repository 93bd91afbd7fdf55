#!/usr/bin/env bash
# Heap profile of linkr under a short load, with dhat.
#
#   scripts/dhat.sh [--seconds N] [--rate R] [--scenario NAME]
#
# Builds linkr with `--no-default-features --features dhat-heap` (dhat's global allocator
# replaces mimalloc and the counting allocator; the two cannot be combined) into its own target
# dir, target/dhat, so target/release/linkr stays the normal build. Then starts it on free
# loopback ports with a fresh temporary data dir, drives `loadgen run` for N seconds, stops
# linkr with SIGTERM (the profile is written during graceful shutdown) and checks that
# profiles/dhat-heap.json exists.
#
# Defaults: --seconds 10 --rate 200 --scenario mixed (dhat records a backtrace per allocation:
# keep the rate modest). The first run builds the dependencies once more for target/dhat.
# Environment: LOADGEN (path of a loadgen binary to use instead of building one).
# Exit 0 on success, 1 when a step fails, 2 on a usage error.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_=10
RATE=200
SCENARIO=mixed
PROFILE=profiles/dhat-heap.json
VIEWER=/usr/libexec/valgrind/dh_view.html

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        -s | --seconds) SECONDS_=${2:?}; shift 2 ;;
        -r | --rate) RATE=${2:?}; shift 2 ;;
        --scenario) SCENARIO=${2:?}; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "dhat.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ $SECONDS_ =~ ^[0-9]+$ && $SECONDS_ -ge 1 && $SECONDS_ -le 600 ]] || { echo "--seconds must be 1..600" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "--rate must be a number" >&2; exit 2; }

SCRIPT=dhat.sh
LINKR_STOP_SECS=120
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh

# --- build -------------------------------------------------------------------------------------
step "building linkr with dhat-heap into target/dhat (nothing to do when fresh)"
cargo build --release --locked -p linkr --bin linkr --no-default-features --features dhat-heap \
    --target-dir "$ROOT/target/dhat"
LINKR=$ROOT/target/dhat/release/linkr
LOADGEN=${LOADGEN:-}
if [[ -z $LOADGEN ]]; then
    step "building release loadgen (nothing to do when fresh)"
    cargo build --release --locked --bin loadgen
    LOADGEN=$ROOT/target/release/loadgen
fi
[[ -x $LINKR ]] || fail "linkr binary not found at $LINKR"
[[ -x $LOADGEN ]] || fail "loadgen binary not found at $LOADGEN"

# --- start linkr -------------------------------------------------------------------------------
mkdir -p "$(dirname "$PROFILE")"
rm -f "$PROFILE"
API_KEY="dhat-$RANDOM$RANDOM$RANDOM"
for attempt in 1 2 3; do
    PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    [[ $PORT != "$ADMIN_PORT" ]] || continue
    BASE="http://127.0.0.1:$PORT"
    rm -rf "$WORK/data"
    step "starting the dhat build of linkr on $BASE (data $WORK/data)"
    env -u LINKR_API_KEYS_FILE -u LINKR_DATABASE_URL -u LINKR_DATABASE_URL_FILE \
        -u LINKR_REDIS_URL -u LINKR_REDIS_URL_FILE \
        LINKR_DHAT_FILE="$ROOT/$PROFILE" \
        LINKR_ADDR="127.0.0.1:$PORT" \
        LINKR_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
        LINKR_DATA_DIR="$WORK/data" \
        LINKR_API_KEYS="dhat:$API_KEY:admin" \
        LINKR_RATE_LIMIT=0 \
        LINKR_ACCESS_LOG=off \
        LINKR_LOG=info \
        LINKR_SHUTDOWN_DELAY=0s \
        LINKR_SHUTDOWN_TIMEOUT=30s \
        "$LINKR" >"$WORK/linkr.log" 2>&1 &
    LINKR_PID=$!
    ready=""
    for ((i = 0; i < 600; i++)); do
        kill -0 "$LINKR_PID" 2>/dev/null || break
        if [[ $(http_code "$BASE/readyz") == 200 ]]; then ready=1; break; fi
        sleep 0.1
    done
    [[ -n $ready ]] && break
    if kill -0 "$LINKR_PID" 2>/dev/null; then fail "linkr did not become ready within 60 s"; fi
    wait "$LINKR_PID" 2>/dev/null || true
    LINKR_PID=""
    echo "linkr exited before it was ready (attempt $attempt); its last log lines:" >&2
    tail -n 5 "$WORK/linkr.log" | sed 's/^/    /' >&2
    echo "retrying with other ports" >&2
done
[[ -n $LINKR_PID ]] || fail "linkr did not start"

# --- load --------------------------------------------------------------------------------------
step "driving load: $SCENARIO at $RATE req/s for ${SECONDS_}s (loadgen)"
"$LOADGEN" run --target "$BASE" --api-key "$API_KEY" --scenario "$SCENARIO" \
    --rate "$RATE" --duration "${SECONDS_}s" >"$WORK/loadgen.log" 2>&1 &
LOAD_PID=$!
# loadgen ends by itself after seeding plus the run; bounded here in case it does not.
for ((i = 0; i < (SECONDS_ + 120) * 10; i++)); do
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$LOAD_PID" 2>/dev/null; then
    echo "warning: loadgen still running after $((SECONDS_ + 120))s, stopping it" >&2
    stop_pid "$LOAD_PID" INT 10
else
    wait "$LOAD_PID" && load_rc=0 || load_rc=$?
    # 1 means a threshold failed (latency under dhat is not the point here); 2 is a setup error.
    [[ $load_rc -le 1 ]] || fail "loadgen failed with status $load_rc"
fi
LOAD_PID=""
tail -n 5 "$WORK/loadgen.log" | sed 's/^/    /'

# --- stop: the profile is written on graceful shutdown --------------------------------------------
step "stopping linkr (SIGTERM); dhat writes the profile on the way out"
stop_pid "$LINKR_PID" TERM 120
LINKR_PID=""
[[ $STOP_RC -eq 0 ]] || fail "linkr exited with status $STOP_RC"
[[ -s $PROFILE ]] || fail "$PROFILE was not written"

step "done: $PROFILE ($(wc -c <"$PROFILE") bytes)"
grep -E 'dhat: (Total|At t-gmax|At t-end)' "$WORK/linkr.log" | sed 's/^/    /' || true
if [[ -f $VIEWER ]]; then
    where="file://$VIEWER"
else
    where="https://nnethercote.github.io/dh_view/dh_view.html (or dh_view.html from valgrind: apt-get install valgrind)"
fi
cat <<EOF
open it in DHAT's viewer:
    1. open $where in a browser
    2. press "Load..." and choose $ROOT/$PROFILE
    (sort by "total (bytes)" or "total (blocks)" to see where linkr allocates most)
EOF
