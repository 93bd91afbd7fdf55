#!/usr/bin/env bash
# The README's test command: installs what the tests need (valgrind, chromium, wrk; a
# throwaway Postgres and Redis for the scale-out tests), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh >/dev/null
trap 'scripts/services.sh stop' EXIT
# shellcheck disable=SC1091
. "${LINKR_SERVICES_DIR:-/tmp/linkr-services}/env"
# `cargo test --workspace --locked "$@"`, its output also kept in target/reliability/ (with the
# reliability cases' RELIABILITY lines) for `scripts/reliability.sh --quick`.
# shellcheck source=lib/reliability_log.sh
. scripts/lib/reliability_log.sh
reliability_test_log "$@"
# The OpenTelemetry build is a feature: its test needs linkr built with it (run last, since it
# rebuilds target/debug/linkr with the feature).
cargo test -p linkr --locked --features otel --test otel "$@"
