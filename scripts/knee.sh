#!/usr/bin/env bash
# The lab's main job: builds the release linkr and loadgen once, then finds the knee of the
# embedded-store linkr (open-model load, mixed scenario), profiles it at the knee and writes
# reports/latest/index.html (and summary.json, flamegraph.svg, cpu.pb.gz, per-step .hgrm files).
# Extra arguments go to `loadgen knee` (e.g. --scenario redirect, --slo-p99 5ms, --step 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p linkr -p linkr-loadgen
exec target/release/loadgen knee --spawn --out reports/latest "$@"
