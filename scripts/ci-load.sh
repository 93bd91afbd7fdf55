#!/usr/bin/env bash
# CI's short load run: a knee search in a few short steps against the embedded-store linkr,
# with a floor under the knee rate; the report stays in reports/ci/ (index.html, summary.json).
# Bounded: at most 5 steps of 3 s plus a 2 s profile window, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p linkr -p linkr-loadgen
target/release/loadgen knee --spawn --out reports/ci \
  --start-rate 1000 --step 3s --max-steps 5 --profile-seconds 2 \
  --min-knee-rate "${CI_MIN_KNEE_RATE:-1000}" "$@"
