#!/usr/bin/env bash
# Installs what the lab needs beyond the Rust toolchain, once: valgrind (instruction-count
# benches), chromium (report rendering test), wrk (generator-ceiling comparison), perf (Debian's
# linux-perf: the CPU profiler's agreement test records the same threads with `perf record`),
# jq, curl and GNU time (scripts/gen-ceiling.sh reads JSON results and CPU seconds), python3
# (scripts/reliability.sh's report and its browser test).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# virtualenvs of scripts/schemathesis.sh and scripts/deny.sh (Debian's python3 lacks ensurepip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/time ] || need+=(time)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt-get)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "setup: valgrind $(valgrind --version 2>/dev/null | head -1), $(chromium --version 2>/dev/null | head -1), wrk $(command -v wrk >/dev/null && echo present), $(perf --version 2>/dev/null)"
