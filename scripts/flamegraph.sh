#!/usr/bin/env bash
# CPU profile of linkr under load, in one command.
#
#   scripts/flamegraph.sh [--seconds N] [--rate R] [--frequency HZ] [--scenario NAME] [--out DIR]
#                         [--mode auto|perf|timer|itimer]
#
# Builds the release `linkr` and `loadgen` exactly as scripts/knee.sh does (`cargo build --release
# --locked -p linkr -p linkr-loadgen`: nothing is rebuilt after a knee run), starts linkr on free
# loopback ports with a fresh temporary data dir, drives it with
# `loadgen run --scenario NAME --rate R` (open model), captures one CPU profile of N seconds
# from the admin listener while the load runs, then stops linkr with SIGTERM. Writes
#
#   profiles/<UTC timestamp>/cpu.pb.gz       gzipped pprof protobuf (go tool pprof, speedscope, ...)
#   profiles/<UTC timestamp>/flamegraph.svg  inferno flamegraph (open in a browser)
#   profiles/<UTC timestamp>/cpu.folded      folded stacks (inferno-flamegraph, speedscope)
#   profiles/<UTC timestamp>/allocs.json     allocations per request by route (GET /debug/allocs)
#
# The three profile files come from one capture (the SVG and folded stacks are re-rendered from it by
# GET /debug/pprof/last). Defaults: --seconds 10 --rate 2000 --frequency 199 --scenario mixed
# --mode auto. The sampler (--mode, the endpoint's `mode=`): `auto` uses per-thread perf events
# with kernel frames where the system allows them (`perf-events`), else per-thread CPU timers
# (`thread-timers`); `itimer` is the old pprof-rs sampler, for comparison only. The summary says
# which sampler ran and how much of linkr's CPU its samples stand for (the coverage); a capture
# with no samples is reported as a failure (exit 1). `--no-libc` is accepted and ignored: no
# sampler drops samples taken in libc any more.
# Environment: LOADGEN (path of the loadgen binary to use instead of building one),
# LINKR (path of the linkr binary to use instead of building one).
# Exit 0 on success, 1 when a step fails, 2 on a usage error.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_=10
RATE=2000
FREQUENCY=199
SCENARIO=mixed
OUT=""
MODE=auto

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        -s | --seconds) SECONDS_=${2:?}; shift 2 ;;
        -r | --rate) RATE=${2:?}; shift 2 ;;
        -f | --frequency) FREQUENCY=${2:?}; shift 2 ;;
        --scenario) SCENARIO=${2:?}; shift 2 ;;
        -o | --out) OUT=${2:?}; shift 2 ;;
        --mode) MODE=${2:?}; shift 2 ;;
        --no-libc) echo "flamegraph.sh: --no-libc is ignored (libc is always sampled now)" >&2; shift ;;
        -h | --help) usage 0 ;;
        *) echo "flamegraph.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ $SECONDS_ =~ ^[0-9]+$ && $SECONDS_ -ge 1 && $SECONDS_ -le 300 ]] || { echo "--seconds must be 1..300" >&2; exit 2; }
[[ $FREQUENCY =~ ^[0-9]+$ && $FREQUENCY -ge 1 && $FREQUENCY -le 1000 ]] || { echo "--frequency must be 1..1000" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "--rate must be a number" >&2; exit 2; }
[[ $MODE =~ ^(auto|perf|perf-user|timer|itimer)$ ]] || { echo "--mode must be auto, perf, perf-user, timer or itimer" >&2; exit 2; }
OUT=${OUT:-profiles/$(date -u +%Y%m%dT%H%M%SZ)}

SCRIPT=flamegraph.sh
LINKR_STOP_SECS=30
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh

# --- build -------------------------------------------------------------------------------------
LINKR=${LINKR:-}
LOADGEN=${LOADGEN:-}
if [[ -z $LINKR || -z $LOADGEN ]]; then
    # The same command as scripts/knee.sh: the same feature set, so cargo reuses its build.
    step "building release linkr and loadgen (nothing to do when fresh)"
    cargo build --release --locked -p linkr -p linkr-loadgen
fi
LINKR=${LINKR:-$ROOT/target/release/linkr}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
[[ -x $LINKR ]] || fail "linkr binary not found at $LINKR"
[[ -x $LOADGEN ]] || fail "loadgen binary not found at $LOADGEN"

# --- start linkr -------------------------------------------------------------------------------
API_KEY="flamegraph-$RANDOM$RANDOM$RANDOM"
for attempt in 1 2 3; do
    PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    [[ $PORT != "$ADMIN_PORT" ]] || continue
    BASE="http://127.0.0.1:$PORT"
    ADMIN="http://127.0.0.1:$ADMIN_PORT"
    rm -rf "$WORK/data"
    step "starting linkr on $BASE (admin $ADMIN, data $WORK/data)"
    env -u LINKR_API_KEYS_FILE -u LINKR_DATABASE_URL -u LINKR_DATABASE_URL_FILE \
        -u LINKR_REDIS_URL -u LINKR_REDIS_URL_FILE \
        LINKR_ADDR="127.0.0.1:$PORT" \
        LINKR_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
        LINKR_DATA_DIR="$WORK/data" \
        LINKR_API_KEYS="flamegraph:$API_KEY:admin" \
        LINKR_RATE_LIMIT=0 \
        LINKR_ACCESS_LOG=off \
        LINKR_LOG=warn \
        LINKR_SHUTDOWN_DELAY=0s \
        LINKR_SHUTDOWN_TIMEOUT=10s \
        "$LINKR" >"$WORK/linkr.log" 2>&1 &
    LINKR_PID=$!
    ready=""
    for ((i = 0; i < 300; i++)); do
        kill -0 "$LINKR_PID" 2>/dev/null || break
        if [[ $(http_code "$BASE/readyz") == 200 ]]; then ready=1; break; fi
        sleep 0.1
    done
    [[ -n $ready ]] && break
    if kill -0 "$LINKR_PID" 2>/dev/null; then fail "linkr did not become ready within 30 s"; fi
    wait "$LINKR_PID" 2>/dev/null || true
    LINKR_PID=""
    echo "linkr exited before it was ready (attempt $attempt); its last log lines:" >&2
    tail -n 5 "$WORK/linkr.log" | sed 's/^/    /' >&2
    echo "retrying with other ports" >&2
done
[[ -n $LINKR_PID ]] || fail "linkr did not start"

# --- load --------------------------------------------------------------------------------------
# Long enough for seeding, the capture and some slack; stopped as soon as the capture is done.
LOAD_SECONDS=$((SECONDS_ + 60))
step "driving load: $SCENARIO at $RATE req/s (loadgen, up to ${LOAD_SECONDS}s)"
"$LOADGEN" run --target "$BASE" --api-key "$API_KEY" --scenario "$SCENARIO" \
    --rate "$RATE" --duration "${LOAD_SECONDS}s" >"$WORK/loadgen.log" 2>&1 &
LOAD_PID=$!

requests_served() {
    curl -s --max-time 2 "$ADMIN/metrics" |
        awk '/^linkr_http_requests_total\{/ { n += $NF } END { printf "%d\n", n }'
}
flowing=""
for ((i = 0; i < 600; i++)); do
    kill -0 "$LOAD_PID" 2>/dev/null || fail "loadgen exited before the load started"
    if [[ $(requests_served) -ge 200 ]]; then flowing=1; break; fi
    sleep 0.1
done
[[ -n $flowing ]] || fail "no load reached linkr within 60 s"

# --- capture -----------------------------------------------------------------------------------
mkdir -p "$OUT"
step "capturing a ${SECONDS_}s CPU profile at ${FREQUENCY} Hz"
code=$(curl -sS -o "$OUT/cpu.pb.gz" -D "$WORK/headers" -w '%{http_code}' --max-time $((SECONDS_ + 120)) \
    "$ADMIN/debug/pprof/profile?seconds=$SECONDS_&frequency=$FREQUENCY&format=pprof&mode=$MODE")
[[ $code == 200 ]] || fail "profile capture answered $code: $(head -c 500 "$OUT/cpu.pb.gz")"
kill -0 "$LOAD_PID" 2>/dev/null || echo "warning: loadgen finished before the capture did" >&2

curl -sS --max-time 10 -o "$OUT/allocs.json" "$ADMIN/debug/allocs" || echo "warning: /debug/allocs failed" >&2

step "stopping the load"
stop_pid "$LOAD_PID" INT 10
LOAD_PID=""

for f in folded:cpu.folded svg:flamegraph.svg; do
    code=$(curl -sS -o "$OUT/${f#*:}" -w '%{http_code}' --max-time 120 \
        "$ADMIN/debug/pprof/last?format=${f%%:*}")
    [[ $code == 200 ]] || fail "rendering ${f%%:*} answered $code"
done

step "stopping linkr (SIGTERM)"
stop_pid "$LINKR_PID" TERM 30
LINKR_PID=""
[[ $STOP_RC -eq 0 ]] || echo "warning: linkr exited with status $STOP_RC" >&2

# --- summary -----------------------------------------------------------------------------------
samples=$(awk '{ n += $NF } END { printf "%d\n", n }' "$OUT/cpu.folded")
header() { awk -v h="$1" 'tolower($1) == h ":" { gsub(/\r/, ""); print $2 }' "$WORK/headers"; }
sampled=$(header x-profile-sampled-cpu-seconds)
used=$(header x-profile-process-cpu-seconds)
coverage=$(awk -v s="${sampled:-0}" -v u="${used:-0}" 'BEGIN { if (u > 0) printf "%.0f%%", 100 * s / u; else print "n/a" }')
step "done: $samples samples by $(header x-profile-mode), standing for $sampled s of the $used s of CPU linkr used (coverage $coverage)"
steal=$(header x-profile-host-steal-seconds)
if awk -v s="${steal:-0}" 'BEGIN { exit !(s > 0) }'; then
    echo "    the host took $steal s of this machine's CPUs (steal) in the window: linkr's CPU time leaves it out, the perf sampler counts what fell on a running thread"
fi
ls -l "$OUT"/cpu.pb.gz "$OUT"/flamegraph.svg "$OUT"/cpu.folded "$OUT"/allocs.json | awk '{ printf "    %8d  %s\n", $5, $NF }'
if [[ $samples -eq 0 ]]; then
    echo "WARNING: the profile holds no samples: linkr used $used s of CPU in the window." >&2
    echo "    Raise --rate, --seconds or --frequency; check that the load reached linkr." >&2
    FAILED=1
else
    echo "top functions by self time (leaf frames):"
    awk '{ count = $NF; sub(/ [0-9]+$/, ""); n = split($0, f, ";"); self[f[n]] += count; total += count }
         END { for (k in self) printf "%6.1f%%  %s\n", 100 * self[k] / total, k }' "$OUT/cpu.folded" |
        sort -rn | head -n 10 | cut -c1-160 | sed 's/^/    /'
fi
if command -v jq >/dev/null && [[ -s $OUT/allocs.json ]]; then
    echo "allocations per request (counting allocator, by route pattern):"
    jq -r '.routes[] | "    \(.route): \(.requests) requests, \(.allocations_per_request * 10 | round / 10) allocations and \(.bytes_per_request | round) bytes per request"' "$OUT/allocs.json"
fi
cat <<EOF
open:
    $OUT/flamegraph.svg                      (any browser)
    go tool pprof -http=127.0.0.1:0 $OUT/cpu.pb.gz   (or drop cpu.pb.gz / cpu.folded on https://www.speedscope.app)
EOF
exit "${FAILED:-0}"
