#!/usr/bin/env bash
# The reliability and security suite, on loopback only, each part bounded in time:
#
#   scripts/reliability.sh [--quick] [--rerun] [--information NAME,...] [--skip PART,...]
#
# - every test file service/tests/reliability_*.rs and loadgen/tests/reliability_*.rs (found by
#   glob), run with --nocapture --test-threads=1; each test is a case: libtest's ok/FAILED/ignored
#   is its verdict, its `RELIABILITY {json}` line what was tried and what it measured;
# - scripts/schemathesis.sh, scripts/fuzz.sh and scripts/deny.sh when present (--quick passed
#   on), each writing reports/reliability/parts/NAME.json.
#
# Writes reports/reliability/summary.json and index.html; exits 1 if a case failed (cases named
# by --information are reported but do not fail the run: a test's name, or a part's NAME).
# --skip PART,... does not run those part scripts (reported as skipped, saying so).
#
# --quick: the parts' short modes, and the test files' results are read from the last
# scripts/test.sh run when it ran the whole workspace on this very checkout (it keeps its log in
# target/reliability/workspace-tests.log); otherwise they run here. --rerun always runs them.
# Postgres and Redis for the scale-out cases come from scripts/services.sh, as in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/reliability_log.sh
. scripts/lib/reliability_log.sh

QUICK=0
RERUN=0
INFORMATION=""
SKIP=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --rerun) RERUN=1 ;;
        --skip) SKIP=${2:?--skip needs PART,...}; shift ;;
        --information) INFORMATION=${2:?--information needs NAME,...}; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "reliability.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT=reports/reliability
# Each test binary and each part script is stopped after this long.
BINARY_TIMEOUT=${LINKR_RELIABILITY_TIMEOUT:-900}
step() { printf '==> %s\n' "$*"; }
started=$SECONDS
rm -rf "$OUT"
mkdir -p "$OUT/parts" "$OUT/logs"
: >"$OUT/logs/runs.tsv"
: >"$OUT/logs/parts.tsv"

# The test files: name, package, source path.
files=()
for f in service/tests/reliability_*.rs service/tests/reliability_*/main.rs \
    loadgen/tests/reliability_*.rs loadgen/tests/reliability_*/main.rs; do
    [[ -e $f ]] && files+=("$f")
done
test_name() { local n=${1#*/tests/}; n=${n%/main.rs}; echo "${n%.rs}"; }
package() { case $1 in service/*) echo linkr ;; loadgen/*) echo linkr-loadgen ;; esac; }
step "reliability: ${#files[@]} test files: $(for f in "${files[@]}"; do printf '%s ' "$(test_name "$f")"; done)"

reused=()
if [[ $QUICK == 1 && $RERUN == 0 ]] && reliability_test_log_fresh; then
    step "reusing the results of the last scripts/test.sh run ($RELIABILITY_TEST_LOG, same checkout)"
    while IFS=$'\t' read -r name code; do
        for f in "${files[@]}"; do
            if [[ $(test_name "$f") == "$name" ]]; then
                printf '%s\t%s\t%s\t0\t%s\n' "$f" "$OUT/logs/$name.log" "$code" "scripts/test.sh" \
                    >>"$OUT/logs/runs.tsv"
                reused+=("$f")
                grep -E '^test .* \.\.\. (ok|FAILED|ignored)' "$OUT/logs/$name.log" \
                    | sed "s/^/   [$name] /" || true
            fi
        done
    done < <(python3 scripts/lib/reliability.py split-log "$RELIABILITY_TEST_LOG" "$OUT/logs")
elif [[ $QUICK == 1 && $RERUN == 0 ]]; then
    step "no scripts/test.sh log of this checkout: running the test files here"
fi

to_run=()
for f in "${files[@]}"; do
    [[ " ${reused[*]} " == *" $f "* ]] || to_run+=("$f")
done

if [[ ${#to_run[@]} -gt 0 ]]; then
    scripts/setup.sh >/dev/null
    step "starting Postgres and Redis (scripts/services.sh)"
    services_env=${LINKR_SERVICES_DIR:-/tmp/linkr-services}/env
    # Stopped at the end only when started here (another run may be using them).
    already_running=0
    [[ -f $services_env ]] && already_running=1
    if scripts/services.sh >/dev/null && [[ -f $services_env ]]; then
        [[ $already_running == 1 ]] || trap 'scripts/services.sh stop >/dev/null' EXIT
        # shellcheck disable=SC1090
        . "$services_env"
    else
        echo "reliability.sh: Postgres/Redis did not start; the scale-out cases run without them" >&2
    fi
    build=()
    for f in "${to_run[@]}"; do build+=(-p "$(package "$f")" --test "$(test_name "$f")"); done
    step "building ${#to_run[@]} test binaries"
    built=1
    cargo test --locked --no-run "${build[@]}" 2>&1 | tee "$OUT/logs/build.log" || built=0
    for f in "${to_run[@]}"; do
        name=$(test_name "$f")
        if [[ $built == 0 ]]; then
            : >"$OUT/logs/$name.log"
            printf '%s\t%s\t%s\t0\trun\n' "$f" "$OUT/logs/$name.log" "build-failed" >>"$OUT/logs/runs.tsv"
            continue
        fi
        step "$name ($f)"
        t0=$SECONDS
        code=0
        timeout --kill-after=10 "$BINARY_TIMEOUT" \
            cargo test --locked -p "$(package "$f")" --test "$name" -- --nocapture --test-threads=1 \
            2>"$OUT/logs/$name.stderr" | tee "$OUT/logs/$name.log" \
            | grep --line-buffered -E '^test |^(ok|FAILED|ignored)|RELIABILITY|^test result' \
            | sed -u "s/^/   [$name] /" || code=${PIPESTATUS[0]}
        if [[ $code != 0 ]]; then
            echo "   [$name] exit $code; last lines of its stderr:"
            tail -n 15 "$OUT/logs/$name.stderr" | sed 's/^/      /'
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' "$f" "$OUT/logs/$name.log" "$code" "$((SECONDS - t0))" run \
            >>"$OUT/logs/runs.tsv"
    done
fi

for part in schemathesis fuzz deny; do
    script=scripts/$part.sh
    [[ -x $script ]] || continue
    if [[ ,$SKIP, == *",$part,"* ]]; then
        step "$script: not run (--skip $part)"
        printf '%s\t%s\t0\t\n' "$part" "skipped-by-option" >>"$OUT/logs/parts.tsv"
        continue
    fi
    args=()
    [[ $QUICK == 1 ]] && args=(--quick)
    step "$script ${args[*]}"
    t0=$SECONDS
    code=0
    before=$(ls "$OUT/parts")
    timeout --kill-after=10 "$BINARY_TIMEOUT" "$script" "${args[@]}" 2>&1 \
        | tee "$OUT/logs/$part.log" | sed -u "s/^/   [$part] /" || code=${PIPESTATUS[0]}
    # The parts this script wrote (usually $OUT/parts/$part.json).
    written=$(comm -13 <(echo "$before") <(ls "$OUT/parts") | grep '\.json$' | paste -sd, || true)
    printf '%s\t%s\t%s\t%s\n' "$part" "$code" "$((SECONDS - t0))" "$written" >>"$OUT/logs/parts.tsv"
done

step "report"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && commit="$commit (uncommitted changes)"
rc=0
python3 scripts/lib/reliability.py summarize --out "$OUT" --runs "$OUT/logs/runs.tsv" \
    --parts-runs "$OUT/logs/parts.tsv" --mode "$([[ $QUICK == 1 ]] && echo quick || echo full)" \
    --information "$INFORMATION" --commit "$commit" --duration "$((SECONDS - started))" || rc=$?
echo "reliability: $OUT/index.html, $OUT/summary.json ($((SECONDS - started)) s)"
exit "$rc"
