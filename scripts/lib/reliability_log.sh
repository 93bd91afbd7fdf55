# Shared by scripts/test.sh and scripts/reliability.sh: the workspace test run's log, which
# `scripts/reliability.sh --quick` reads instead of running the reliability test binaries again.
# shellcheck shell=bash

RELIABILITY_TEST_LOG=target/reliability/workspace-tests.log

# The checkout's state: HEAD plus a hash of uncommitted changes (tracked diffs, untracked names).
reliability_tree_state() {
    local head dirty
    head=$(git rev-parse HEAD 2>/dev/null || echo none)
    dirty=$({ git diff HEAD 2>/dev/null; git ls-files --others --exclude-standard 2>/dev/null; } \
        | sha1sum | cut -c1-12)
    echo "$head-$dirty"
}

# reliability_test_log ARGS...: `cargo test --workspace --locked ARGS...`, with libtest's
# --show-output so that passing tests' RELIABILITY lines are kept. The whole output goes to
# $RELIABILITY_TEST_LOG; the console shows what a plain run shows (the successes' captured output
# is left out). Returns cargo's exit status.
reliability_test_log() {
    local extra=(-- --show-output) a rc=0
    for a in "$@"; do
        [[ $a == -- ]] && extra=(--show-output)
    done
    mkdir -p "$(dirname "$RELIABILITY_TEST_LOG")"
    printf '# linkr test log: state=%s args=%s\n' "$(reliability_tree_state)" "$*" \
        >"$RELIABILITY_TEST_LOG.tmp"
    cargo test --workspace --locked "$@" "${extra[@]}" 2>&1 \
        | tee -a "$RELIABILITY_TEST_LOG.tmp" \
        | awk '/^successes:$/ { hide = 1 } /^test result:/ { hide = 0 } !hide { print; fflush() }' \
        || rc=$?
    mv "$RELIABILITY_TEST_LOG.tmp" "$RELIABILITY_TEST_LOG"
    return "$rc"
}

# True when $RELIABILITY_TEST_LOG comes from a whole-workspace run (no filter arguments) of the
# checkout as it is now.
reliability_test_log_fresh() {
    [[ -f $RELIABILITY_TEST_LOG ]] || return 1
    local header
    header=$(head -n 1 "$RELIABILITY_TEST_LOG")
    [[ $header == "# linkr test log: state=$(reliability_tree_state) args=" ]]
}
