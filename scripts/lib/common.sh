# Shared by scripts/flamegraph.sh and scripts/dhat.sh: progress lines, free ports, and a
# cleanup trap that stops the load and linkr (SIGTERM, then SIGKILL) and shows their last
# log lines on failure. Set SCRIPT (name for messages) and LINKR_STOP_SECS before sourcing.
# shellcheck shell=bash
step() { printf '==> %s\n' "$*"; }
fail() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/linkr-${SCRIPT%.sh}.XXXXXX")
LINKR_PID=""
LOAD_PID=""

STOP_RC=0
stop_pid() {
    # stop_pid PID SIGNAL SECONDS: signal, wait up to SECONDS, then SIGKILL; exit status in STOP_RC.
    local pid=$1 sig=$2 secs=$3
    STOP_RC=0
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || STOP_RC=$?
            return 0
        fi
        sleep 0.1
    done
    echo "$SCRIPT: pid $pid ignored SIG$sig for ${secs}s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || STOP_RC=$?
}

cleanup() {
    local rc=$?
    stop_pid "$LOAD_PID" INT 10
    stop_pid "$LINKR_PID" TERM "$LINKR_STOP_SECS"
    if [[ $rc -ne 0 && -f $WORK/linkr.log ]]; then
        echo "--- last lines of the linkr log ---" >&2
        tail -n 20 "$WORK/linkr.log" >&2 || true
    fi
    if [[ $rc -ne 0 && -f $WORK/loadgen.log ]]; then
        echo "--- last lines of the loadgen log ---" >&2
        tail -n 20 "$WORK/loadgen.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    fail "no free loopback port found"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
