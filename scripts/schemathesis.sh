#!/usr/bin/env bash
# Schema testing: schemathesis (PyPI, pinned below, in its own virtualenv target/schemathesis/venv)
# against /openapi.json of a linkr it spawns on loopback (debug build, fresh data dir, an admin
# API key, rate limiting off), with every check on (`--checks all`: no 5xx, responses inside the
# schema, schema-valid requests accepted, schema-invalid ones rejected, auth enforced, deleted
# links gone, created links reachable). Must end with 0 failures.
#
#   scripts/schemathesis.sh [--quick] [--examples N] [--seed N]
#
# Bounded: --examples cases per operation and phase (default 300, about 30 s; --quick or
# LINKR_SCHEMATHESIS_QUICK=1: 25, a few seconds), the whole run stopped after 240 s. The seed is
# random unless --seed (or LINKR_SCHEMATHESIS_SEED) is given; the report names it. LINKR_BIN runs
# that linkr instead of building target/debug/linkr.
#
# Writes reports/reliability/parts/schemathesis.json and, in reports/reliability/schemathesis/,
# schemathesis's JSON and JUnit reports, its output and linkr's log (access log at info: the
# 5xx count is read from the server's side too). Exits 1 on a failure, 0 when it passed or was
# skipped (no Python virtualenv or PyPI: said so).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${LINKR_SCHEMATHESIS_EXAMPLES:-300}
SEED=${LINKR_SCHEMATHESIS_SEED:-}
[[ ${LINKR_SCHEMATHESIS_QUICK:-0} == 1 ]] && EXAMPLES=25
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) EXAMPLES=25 ;;
        --examples) EXAMPLES=${2:?--examples needs N}; shift ;;
        --seed) SEED=${2:?--seed needs N}; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "schemathesis.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}

OUT=reports/reliability
DIR=$OUT/schemathesis
PART=$OUT/parts/schemathesis.json
VENV=target/schemathesis/venv
mkdir -p "$OUT/parts" "$DIR"
rm -rf "${DIR:?}"/*

# write_part PASSED SKIPPED REASON FIGURES_JSON
write_part() {
    python3 - "$PART" "$1" "$2" "$3" "$4" "$EXAMPLES" "$SEED" "$SCHEMATHESIS_VERSION" <<'EOF'
import json, sys
path, passed, skipped, reason, figures, examples, seed, version = sys.argv[1:]
json.dump({
    "case": "schema_schemathesis",
    "tried": "schemathesis %s against /openapi.json of a spawned linkr, every check on "
             "(--checks all), up to %s examples per operation and phase, seed %s"
             % (version, examples, seed),
    "passed": passed == "true", "skipped": skipped == "true", "reason": reason,
    "figures": json.loads(figures),
}, open(path, "w"), indent=1)
EOF
}

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION into $VENV (PyPI)"
    if ! { python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; }; then
        echo "schemathesis.sh: could not make the virtualenv or install from PyPI: skipped"
        write_part false true "schemathesis could not be installed (python3 -m venv or PyPI unavailable)" '{}'
        exit 0
    fi
fi

if [[ -n ${LINKR_BIN:-} ]]; then
    BIN=$LINKR_BIN
else
    cargo build --locked -q -p linkr --bin linkr
    BIN=target/debug/linkr
fi

KEY="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN_PORT=$(free_port)
DATA=$(mktemp -d target/schemathesis/data.XXXXXX)
LINKR_ADDR=127.0.0.1:$PORT LINKR_ADMIN_ADDR=127.0.0.1:$ADMIN_PORT LINKR_DATA_DIR=$DATA \
    LINKR_API_KEYS="schemathesis:$KEY:admin" LINKR_RATE_LIMIT=0 LINKR_LOG_FORMAT=json \
    LINKR_LOG=info LINKR_ACCESS_LOG=on LINKR_SHUTDOWN_DELAY=0s \
    "$BIN" >"$DIR/linkr.log" 2>&1 &
LINKR_PID=$!
stop_linkr() {
    if kill -0 "$LINKR_PID" 2>/dev/null; then
        kill -TERM "$LINKR_PID"
        wait "$LINKR_PID" || true
    fi
    rm -rf "$DATA"
}
trap stop_linkr EXIT

BASE=http://127.0.0.1:$PORT
for _ in $(seq 300); do
    curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null && break
    kill -0 "$LINKR_PID" 2>/dev/null || { echo "schemathesis.sh: linkr exited:" >&2; cat "$DIR/linkr.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -o /dev/null "$BASE/readyz" || { echo "schemathesis.sh: linkr not ready after 30 s" >&2; exit 1; }
echo "schemathesis.sh: linkr at $BASE; schemathesis $SCHEMATHESIS_VERSION, $EXAMPLES examples, seed $SEED"

# A schema-valid code may name a link that expired during the run (stateful tests create links
# with short ttl_seconds): its documented answer is 410, like 404 for one that never existed.
# Otherwise schemathesis's defaults for accepting schema-valid data.
CONFIG=target/schemathesis/schemathesis.toml
cat >"$CONFIG" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]
TOML

code=0
ROOT=$PWD
# Run from target/schemathesis: schemathesis keeps a cache in ./.schemathesis.
(cd target/schemathesis && timeout --kill-after=10 240 "$ROOT/$VENV/bin/schemathesis" \
    --config-file "$ROOT/$CONFIG" run "$BASE/openapi.json" \
    --checks all --header "Authorization: Bearer $KEY" \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 --continue-on-failure \
    --request-timeout 10 --no-color \
    --report json,junit --report-json-path "$ROOT/$DIR/report.json" \
    --report-junit-path "$ROOT/$DIR/junit.xml") >"$DIR/output.txt" 2>&1 || code=$?
sed -n '/^=* *FAILURES/,$p' "$DIR/output.txt" | head -200 || true
grep -E '^\s*[0-9]+ generated|^=+ .* in [0-9.]+s =+$' "$DIR/output.txt" | sed 's/^ */schemathesis.sh: /' || true

stop_linkr
trap - EXIT

# Figures from schemathesis's report, and the 5xx count from linkr's own access log (the lines
# after the first /readyz 200: see `reliability.py server-errors`).
access=$(python3 scripts/lib/reliability.py server-errors "$DIR/linkr.log")
figures=$(python3 - "$DIR/report.json" "$code" "$access" <<'EOF'
import json, sys
report_path, code, access = sys.argv[1:]
access = json.loads(access)
try:
    report = json.load(open(report_path))
except (OSError, ValueError):
    report = {}
cases = report.get("test_cases", {})
failures = report.get("failures", [])
print(json.dumps({
    "schemathesis_cases": cases.get("generated"),
    "failures": sum(f.get("count", 1) for f in failures) if report else None,
    "unique_failures": cases.get("unique_failures"),
    "errors": len(report.get("errors", [])) if report else None,
    "operations": report.get("operations", {}).get("tested"),
    "server_errors": access["server_errors"],
    "requests_logged": access["requests"],
    "exit_code": int(code),
}))
EOF
)
echo "schemathesis.sh: $figures"
read -r failures errors cases server_errors requests < <(python3 -c '
import json, sys
f = json.loads(sys.argv[1])
print(f["failures"], f["errors"], f["schemathesis_cases"], f["server_errors"], f["requests_logged"])' "$figures")

if [[ $code == 0 && $failures == 0 && $errors == 0 && $server_errors == 0 && $requests -gt 0 ]]; then
    write_part true false "$cases cases, 0 failures, 0 5xx in linkr's access log ($requests requests)" "$figures"
    echo "schemathesis.sh: passed ($DIR)"
else
    kinds=$(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print("; ".join("%s %s x%s on %s" % (f["code"], f["title"], f["count"], ", ".join(f["operations"])) for f in r["failures"]))
except Exception as e:
    print("no report (%s)" % e)' "$DIR/report.json")
    write_part false false "schemathesis exited $code: $failures failures, $errors errors, $server_errors 5xx logged; $kinds" "$figures"
    echo "schemathesis.sh: FAILED ($DIR/output.txt)" >&2
    exit 1
fi
