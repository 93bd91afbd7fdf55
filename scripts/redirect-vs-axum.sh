#!/usr/bin/env bash
# Redirect throughput of linkr against axum's own fixed 302 (a benchmark, not a gate).
#
# Both servers are release builds pinned to CPU 0 (one tokio worker each); wrk -t1 runs on
# CPU 1. linkr serves `GET /{code}` for a seeded link with its shipped defaults (metrics,
# per-route allocation counting and request ids on; rate limiting off), except the access log:
# LINKR_ACCESS_LOG=off unless --access-log on. The reference is benches/src/bin/fixed-302.rs:
# `Router::new().route("/{code}", get(..))` answering 302 with a `Location` of the same length,
# served by `axum::serve`. Rounds are interleaved (axum, linkr; then linkr, axum; ...) after a
# warm-up of each; the result is each round's ratio linkr / axum and their median. The second
# instrument is each server's CPU time per request over the same runs (/proc/PID/stat), whose
# ratio axum / linkr holds when other processes compete for CPU 0 and req/s does not.
#
# Usage: scripts/redirect-vs-axum.sh [--rounds N] [--duration SECS] [--connections N]
#                                    [--access-log on|off] [--profile DIR] [--json FILE]
#   --profile DIR  after the rounds, records each server under the same load with
#                  `perf record -e cpu-clock -g` (user and kernel frames) and writes
#                  DIR/{linkr,axum}.folded, flamegraphs DIR/{linkr,axum}.svg and the differential
#                  DIR/diff.svg (inferno-diff-folded axum linkr: red = more samples in linkr).
#                  Needs perf and inferno (cargo install inferno).
#   --json FILE    the rounds, ratios and median as JSON.
# Loopback only; every run is bounded in time. Needs wrk, taskset, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=redirect-vs-axum.sh
LINKR_STOP_SECS=10
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

ROUNDS=3 D=5 C=32 ACCESS_LOG=off PROFILE="" JSON=""
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) D=${2%s}; shift 2 ;;
        --connections) C=$2; shift 2 ;;
        --access-log) ACCESS_LOG=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        --json) JSON=$2; shift 2 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) fail "unknown argument $1 (see --help)" ;;
    esac
done
[[ $ACCESS_LOG == on || $ACCESS_LOG == off ]] || fail "--access-log on|off"
for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup.sh installs wrk)"
done
if [[ -n $PROFILE ]]; then
    for tool in perf inferno-collapse-perf inferno-flamegraph inferno-diff-folded; do
        command -v "$tool" >/dev/null || fail "--profile needs $tool (perf: scripts/setup.sh; inferno: cargo install inferno)"
    done
fi
(($(nproc) >= 2)) || fail "needs 2 CPUs (servers on CPU 0, wrk on CPU 1)"

step "building (release)"
cargo build --release --locked -q -p linkr -p linkr-benches --bin linkr --bin fixed-302
# Copies: another build replacing target/release/* meanwhile must not change what runs, nor the
# symbols perf resolves afterwards.
BIN=$WORK/bin
mkdir -p "$BIN"
cp target/release/linkr target/release/fixed-302 "$BIN/"
LOCATION="https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter"
CODE=K7q2xNa
KEY=redirect-vs-axum-key-0123456789

AXUM_PID=""
stop_axum() { stop_pid "$AXUM_PID" TERM 5; AXUM_PID=""; }
trap 'rc=$?; stop_axum; (exit $rc); cleanup' EXIT

aport=$(free_port)
taskset -c 0 "$BIN/fixed-302" --addr "127.0.0.1:$aport" --location "$LOCATION" >"$WORK/axum.log" 2>&1 &
AXUM_PID=$!
AXUM_URL="http://127.0.0.1:$aport/$CODE"

lport=$(free_port)
adport=$(free_port)
LINKR_ADDR="127.0.0.1:$lport" LINKR_ADMIN_ADDR="127.0.0.1:$adport" LINKR_DATA_DIR="$WORK/data" \
    LINKR_API_KEYS="bench:$KEY" LINKR_ACCESS_LOG=$ACCESS_LOG LINKR_SHUTDOWN_DELAY=0s \
    taskset -c 0 "$BIN/linkr" >"$WORK/linkr.log" 2>&1 &
LINKR_PID=$!
LINKR_URL="http://127.0.0.1:$lport/$CODE"

for _ in $(seq 200); do
    [[ $(http_code "http://127.0.0.1:$lport/readyz") == 200 && $(http_code "$AXUM_URL") == 302 ]] && break
    sleep 0.05
done
[[ $(http_code "$AXUM_URL") == 302 ]] || fail "fixed-302 did not answer"
[[ $(http_code "http://127.0.0.1:$lport/readyz") == 200 ]] || fail "linkr did not become ready"
created=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $KEY" \
    -H 'content-type: application/json' -d "{\"url\":\"$LOCATION\",\"code\":\"$CODE\"}" \
    "http://127.0.0.1:$lport/v1/links")
[[ $created == 201 ]] || fail "seeding the link failed: HTTP $created"
for url in "$AXUM_URL" "$LINKR_URL"; do
    got=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$url")
    [[ $got == "302 $LOCATION" ]] || fail "$url answered '$got', not a 302 to the link"
done

# CPU ticks (user + system, all threads) of a process so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
# wrk_run NAME URL SECS [PID]: wrk on CPU 1 (output in $WORK/NAME.out); with PID, the server's
# CPU time over the run in $WORK/NAME.ticks. rps NAME: requests/s; cpu_us NAME: server CPU µs
# per request (the second instrument: it holds under CPU contention, where req/s does not).
wrk_run() {
    local t0=""
    [[ -n ${4:-} ]] && t0=$(ticks "$4")
    taskset -c 1 wrk -t1 -c"$C" -d"$3s" "$2" >"$WORK/$1.out" 2>&1 || {
        cat "$WORK/$1.out" >&2; fail "wrk failed against $2"; }
    if grep -q "Non-2xx or 3xx" "$WORK/$1.out"; then
        cat "$WORK/$1.out" >&2; fail "errors in $1"
    fi
    [[ -n $t0 ]] && echo $(($(ticks "$4") - t0)) >"$WORK/$1.ticks"
    return 0
}
rps() { awk '/Requests\/sec/ {print $2}' "$WORK/$1.out"; }
cpu_us() {
    awk -v t="$(cat "$WORK/$1.ticks")" -v hz="$TCK" '/requests in/ {printf "%.2f\n", t / hz * 1e6 / $1}' "$WORK/$1.out"
}
calc() { awk "BEGIN {printf \"%.${2:-3}f\", $1}"; }
kilo() { awk "BEGIN {printf \"%.1fk\", $1 / 1000}"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
step "warm-up (1 s each)"
wrk_run warm-axum "$AXUM_URL" 1
wrk_run warm-linkr "$LINKR_URL" 1

declare -a AX LK RT AXC LKC CR
for ((r = 1; r <= ROUNDS; r++)); do
    step "round $r/$ROUNDS: wrk -t1 -c$C -d${D}s"
    if ((r % 2)); then
        wrk_run "axum-$r" "$AXUM_URL" "$D" "$AXUM_PID"
        wrk_run "linkr-$r" "$LINKR_URL" "$D" "$LINKR_PID"
    else
        wrk_run "linkr-$r" "$LINKR_URL" "$D" "$LINKR_PID"
        wrk_run "axum-$r" "$AXUM_URL" "$D" "$AXUM_PID"
    fi
    AX[r]=$(rps "axum-$r")
    LK[r]=$(rps "linkr-$r")
    RT[r]=$(calc "${LK[r]} / ${AX[r]}")
    AXC[r]=$(cpu_us "axum-$r")
    LKC[r]=$(cpu_us "linkr-$r")
    CR[r]=$(calc "${AXC[r]} / ${LKC[r]}")
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
median=$(med "${RT[@]:1}")
cpu_median=$(med "${CR[@]:1}")

echo
printf '| %-28s |' ""
for ((r = 1; r <= ROUNDS; r++)); do printf ' round %-4s |' "$r"; done
printf ' median |\n|%s|' "$(printf -- '-%.0s' $(seq 30))"
for ((r = 1; r <= ROUNDS; r++)); do printf '%s|' "------------"; done
printf '%s|\n' "--------"
printf '| %-28s |' "axum fixed-302 (req/s)"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "$(kilo "${AX[r]}")"; done
printf ' %-6s |\n' ""
printf '| %-28s |' "linkr GET /{code} (req/s)"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "$(kilo "${LK[r]}")"; done
printf ' %-6s |\n' ""
printf '| %-28s |' "ratio linkr / axum"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "${RT[r]}"; done
printf ' %-6s |\n' "$median"
printf '| %-28s |' "axum server CPU us/request"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "${AXC[r]}"; done
printf ' %-6s |\n' ""
printf '| %-28s |' "linkr server CPU us/request"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "${LKC[r]}"; done
printf ' %-6s |\n' ""
printf '| %-28s |' "CPU ratio axum / linkr"
for ((r = 1; r <= ROUNDS; r++)); do printf ' %-10s |' "${CR[r]}"; done
printf ' %-6s |\n' "$cpu_median"
echo
echo "access log $ACCESS_LOG; load average before $load_before, after $load_after"

if [[ -n $JSON ]]; then
    {
        printf '{"rounds":['
        for ((r = 1; r <= ROUNDS; r++)); do
            ((r > 1)) && printf ','
            printf '{"axum":%s,"linkr":%s,"ratio":%s,"axum_cpu_us":%s,"linkr_cpu_us":%s,"cpu_ratio":%s}' \
                "${AX[r]}" "${LK[r]}" "${RT[r]}" "${AXC[r]}" "${LKC[r]}" "${CR[r]}"
        done
        printf '],"median_ratio":%s,"median_cpu_ratio":%s,"duration_s":%s,"connections":%s,"access_log":"%s",' \
            "$median" "$cpu_median" "$D" "$C" "$ACCESS_LOG"
        printf '"load_before":"%s","load_after":"%s"}\n' "$load_before" "$load_after"
    } >"$JSON"
fi

if [[ -n $PROFILE ]]; then
    mkdir -p "$PROFILE"
    # profile NAME PID URL: perf on the server while wrk loads it.
    profile() {
        step "profiling $1 (perf record -e cpu-clock -g, ${D}s under wrk -t1 -c$C)"
        taskset -c 1 wrk -t1 -c"$C" -d"$((D + 2))s" "$3" >"$WORK/prof-$1.out" 2>&1 &
        LOAD_PID=$!
        sleep 1
        perf record -q -e cpu-clock -g -p "$2" -o "$WORK/$1.perf" -- sleep "$D" 2>"$WORK/perf-$1.err" ||
            { cat "$WORK/perf-$1.err" >&2; fail "perf record failed"; }
        wait "$LOAD_PID" || true
        LOAD_PID=""
        perf script -i "$WORK/$1.perf" 2>/dev/null | inferno-collapse-perf >"$PROFILE/$1.folded"
        inferno-flamegraph --title "$1: GET /{code} under wrk -t1 -c$C" \
            <"$PROFILE/$1.folded" >"$PROFILE/$1.svg"
        echo "    $(awk '{s += $NF} END {print s}' "$PROFILE/$1.folded") samples -> $PROFILE/$1.svg"
    }
    profile axum "$AXUM_PID" "$AXUM_URL"
    profile linkr "$LINKR_PID" "$LINKR_URL"
    inferno-diff-folded "$PROFILE/axum.folded" "$PROFILE/linkr.folded" |
        inferno-flamegraph --title "linkr vs axum fixed 302 (red: more in linkr)" >"$PROFILE/diff.svg"
    echo "    differential flamegraph -> $PROFILE/diff.svg"
fi
