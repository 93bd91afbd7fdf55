#!/usr/bin/env bash
# Criterion microbenchmarks and the instruction-count gate of linkr's hot paths.
#
#   scripts/bench.sh run [FILTER]          all criterion benches (full length, with plots), then the table
#   scripts/bench.sh quick [FILTER]        short run of everything (CI smoke, ~3 min): reports, never fails
#   scripts/bench.sh save NAME [FILTER]    run and save criterion baseline NAME
#   scripts/bench.sh compare NAME [FILTER] run against baseline NAME: table of changes, exit 1 on regression
#   scripts/bench.sh report                only re-tabulate the last results
#   scripts/bench.sh gate [--update]       valgrind instruction counts vs profiles/baseline/instructions.json
#
# Options for run/quick/save/compare/report:
#   --quick               short criterion settings (run/save/compare)
#   --max-regression PCT  fail on a significant slowdown beyond PCT (default 10; quick: report only
#                         unless given)
#   --check-targets       also fail when one of the lab's target ratios is missed
# Writes reports/bench/index.html (links target/criterion/report/index.html) and
# target/criterion/allocs/*.json. Exit 1 on a significant regression beyond the
# threshold (or a gate failure), 2 on a usage or setup error.
set -euo pipefail

cd "$(dirname "$0")/.."

CRITERION_BENCHES=(alloc pool encode token_bucket codes store request)
QUICK_ARGS=(--warm-up-time 0.3 --measurement-time 0.7 --sample-size 10 --nresamples 10000 --noplot)
MAX_REGRESSION=10
MAX_REGRESSION_GIVEN=0
QUICK=0
CHECK_TARGETS=()
REPORT_ONLY=()

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

bench_flags() {
    local flags=()
    for b in "${CRITERION_BENCHES[@]}"; do flags+=(--bench "$b"); done
    echo "${flags[@]}"
}

criterion() {
    # criterion() FILTER criterion-args...
    local filter=$1
    shift
    local extra=()
    mark_start
    if [[ $QUICK == 1 ]]; then
        extra=("${QUICK_ARGS[@]}")
        export LINKR_BENCH_ALLOC_BUDGET_MS=${LINKR_BENCH_ALLOC_BUDGET_MS:-100}
    fi
    # shellcheck disable=SC2046
    cargo bench -p linkr-benches $(bench_flags) -- "$@" "${extra[@]}" ${filter:+"$filter"}
}

SINCE=()
mark_start() {
    # The table then lists only the benches this run measured.
    mkdir -p target/criterion
    touch target/criterion/.run-start
    SINCE=(--since target/criterion/.run-start)
}

report() {
    cargo run --quiet --release -p linkr-benches --bin bench-report -- table \
        --max-regression "$MAX_REGRESSION" "${CHECK_TARGETS[@]}" "${REPORT_ONLY[@]}" \
        "${SINCE[@]}" --html reports/bench/index.html
}

gungraun_version() {
    awk '/^name = "gungraun"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

ensure_gungraun_runner() {
    local want have
    want=$(gungraun_version)
    if [[ -z "$want" ]]; then
        echo "bench.sh: gungraun not found in Cargo.lock" >&2
        exit 2
    fi
    have=$(gungraun-runner --version 2>/dev/null | awk '{print $2}' || true)
    if [[ "$have" != "$want" ]]; then
        echo "installing gungraun-runner $want (found: ${have:-none})" >&2
        cargo install gungraun-runner --version "$want" --locked
    fi
    if ! command -v valgrind >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq valgrind
        else
            echo "bench.sh: valgrind is required for the instruction-count gate" >&2
            exit 2
        fi
    fi
}

gate() {
    local update=()
    for arg in "$@"; do
        case $arg in
        --update) update=(--update) ;;
        *) usage ;;
        esac
    done
    ensure_gungraun_runner
    rm -rf target/gungraun/linkr-benches/instructions
    GUNGRAUN_SAVE_SUMMARY=json cargo bench -p linkr-benches --bench instructions
    cargo run --quiet --release -p linkr-benches --bin bench-report -- gate \
        --gungraun-dir target/gungraun/linkr-benches/instructions \
        --baseline profiles/baseline/instructions.json --max-increase 3 \
        --json reports/bench/instructions.json "${update[@]}"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
if [[ $cmd == gate ]]; then
    gate "$@"
    exit
fi

positional=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --max-regression) MAX_REGRESSION=${2:?--max-regression needs a value}; MAX_REGRESSION_GIVEN=1; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --check-targets) CHECK_TARGETS=(--check-targets); shift ;;
    -h | --help) usage ;;
    *) positional+=("$1"); shift ;;
    esac
done
set -- "${positional[@]+"${positional[@]}"}"

case $cmd in
run)
    criterion "${1:-}"
    report
    ;;
quick)
    QUICK=1
    # Short runs on a shared machine are noisy: report changes, fail only when asked to.
    [[ $MAX_REGRESSION_GIVEN == 1 ]] || REPORT_ONLY=(--report-only)
    criterion "${1:-}"
    report
    ;;
save)
    name=${1:?usage: bench.sh save NAME [FILTER]}
    criterion "${2:-}" --save-baseline "$name"
    report
    ;;
compare)
    name=${1:?usage: bench.sh compare NAME [FILTER]}
    criterion "${2:-}" --baseline-lenient "$name"
    report
    ;;
report)
    # Only what the last run measured (stale results of renamed benches stay out).
    [[ -f target/criterion/.run-start ]] && SINCE=(--since target/criterion/.run-start)
    report
    ;;
*) usage ;;
esac
