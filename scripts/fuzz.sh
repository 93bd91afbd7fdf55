#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of the parsers that take
# hostile input: fuzz/fuzz_targets/{url,code,create_body}.rs, each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [--quick] [--targets a,b]
#
# SECONDS per target (default 60; --quick or LINKR_FUZZ_QUICK=1: 10, and a dev build without
# AddressSanitizer: half the CPU of the first build, overflow checks on). Needs a nightly toolchain
# (`cargo +nightly`); a machine without one gets a skipped result saying so, exit 0. cargo-fuzz
# is installed with `cargo install cargo-fuzz --locked` when missing (about 2 min, once).
# The build goes to target/fuzz/ (the shared target dir; AddressSanitizer builds cannot share
# artifacts with the stable ones), the growing corpus to target/fuzz/corpus/<target>/, seeded
# from fuzz/seeds/<target>/.
#
# A crash fails the run: its input is copied to fuzz/regressions/<target>/ (commit it with the
# fix; service/tests/props.rs replays every file there on stable Rust). Writes
# reports/reliability/parts/fuzz.json and the fuzzers' output to reports/reliability/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=60
QUICK=${LINKR_FUZZ_QUICK:-0}
TARGETS=url,code,create_body
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --targets) TARGETS=${2:?--targets needs a,b}; shift ;;
        [0-9]*) SECONDS_PER_TARGET=$1 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=target/fuzz
BUILD=(--fuzz-dir fuzz --target-dir "$WORK")
SANITIZER=address
if [[ $QUICK == 1 ]]; then
    SECONDS_PER_TARGET=10
    BUILD+=(--dev --sanitizer none)
    SANITIZER=none
fi

OUT=reports/reliability
LOGS=$OUT/fuzz
PART=$OUT/parts/fuzz.json
mkdir -p "$OUT/parts" "$LOGS"
rm -f "$LOGS"/*.log

# write_part PASSED SKIPPED REASON FIGURES_JSON
write_part() {
    python3 - "$PART" "$1" "$2" "$3" "$4" "$TARGETS" "$SECONDS_PER_TARGET" "$SANITIZER" <<'EOF'
import json, sys
path, passed, skipped, reason, figures, targets, seconds, sanitizer = sys.argv[1:]
json.dump({
    "case": "input_fuzzing",
    "tried": "cargo fuzz (libFuzzer, sanitizer: %s) on %s for up to %s s each, seeded from "
             "fuzz/seeds" % (sanitizer, ", ".join(targets.split(",")), seconds),
    "passed": passed == "true", "skipped": skipped == "true", "reason": reason,
    "figures": json.loads(figures),
}, open(path, "w"), indent=1)
EOF
}

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain (cargo +nightly): fuzzing skipped; the property tests in service/tests/props.rs cover the same parsers on stable"
    write_part false true "no nightly toolchain on this machine: cargo-fuzz cannot build; skipped" '{}'
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install --locked)"
    t0=$SECONDS
    if ! cargo install cargo-fuzz --locked; then
        write_part false true "cargo-fuzz could not be installed (crates.io unreachable?); skipped" '{}'
        exit 0
    fi
    echo "fuzz.sh: cargo-fuzz installed in $((SECONDS - t0)) s"
fi
echo "fuzz.sh: $(cargo +nightly --version), $(cargo fuzz --version)"

t0=$SECONDS
# --fuzz-dir: the crate is fuzz/ (the default), said for clarity.
if ! cargo +nightly fuzz build "${BUILD[@]}" >"$LOGS/build.log" 2>&1; then
    grep -v '^ *Compiling' "$LOGS/build.log" | head -40 >&2
    write_part false false "the fuzz targets do not build (see $LOGS/build.log)" '{}'
    echo "fuzz.sh: FAILED: build" >&2
    exit 1
fi
build_seconds=$((SECONDS - t0))
echo "fuzz.sh: built in $build_seconds s"

failed=()
runs_total=0
summary=()
for target in ${TARGETS//,/ }; do
    corpus=$WORK/corpus/$target
    artifacts=$WORK/artifacts/$target/
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*
    echo "fuzz.sh: $target for ${SECONDS_PER_TARGET} s"
    code=0
    cargo +nightly fuzz run "${BUILD[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -artifact_prefix="$artifacts" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$LOGS/$target.log" 2>&1 || code=$?
    runs=$(grep -E '^stat::number_of_executed_units:' "$LOGS/$target.log" | awk '{print $2}' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$LOGS/$target.log" | tail -1 | awk '{print $2}')
    runs_total=$((runs_total + ${runs:-0}))
    summary+=("\"$target\": {\"runs\": ${runs:-null}, \"coverage\": ${cov:-null}, \"exit_code\": $code}")
    if [[ $code != 0 ]]; then
        failed+=("$target")
        mkdir -p "fuzz/regressions/$target"
        for input in "$artifacts"*; do
            [[ -f $input ]] || continue
            cp "$input" "fuzz/regressions/$target/$(basename "$input")"
            echo "fuzz.sh: $target: crashing input kept as fuzz/regressions/$target/$(basename "$input")"
        done
        grep -E 'panicked|ERROR: AddressSanitizer|SUMMARY' "$LOGS/$target.log" | head -5 | sed "s/^/fuzz.sh:   /"
    fi
    echo "fuzz.sh: $target: ${runs:-?} runs, coverage ${cov:-?}, exit $code"
done

figures=$(printf '{"runs": %s, "build_seconds": %s, "seconds_per_target": %s, "targets": {%s}}' \
    "$runs_total" "$build_seconds" "$SECONDS_PER_TARGET" "$(IFS=,; echo "${summary[*]}")")
if [[ ${#failed[@]} == 0 ]]; then
    write_part true false "no crash in $runs_total runs over ${TARGETS//,/, }" "$figures"
    echo "fuzz.sh: passed ($runs_total runs)"
else
    write_part false false "crashes in ${failed[*]}: inputs in fuzz/regressions/, logs in $LOGS" "$figures"
    echo "fuzz.sh: FAILED: ${failed[*]} (logs in $LOGS)" >&2
    exit 1
fi
