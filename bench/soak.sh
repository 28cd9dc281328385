#!/usr/bin/env bash
# Soak test: mixed HTTP, WebSocket and bulk traffic through burrow and real frps 0.65.0, with
# frps restarted on a schedule; prints RSS, descriptors, traffic and failures over time, then a
# summary. Not part of CI.
#
#   bench/soak.sh                      # 30 minutes, frps restarted every 5 minutes
#   SOAK_MINUTES=5 SOAK_RESTART_SECS=60 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
resources/fetch-frp.sh >/dev/null
echo "soak: building (release) ..." >&2
exec cargo test --release --test integration soak:: -- --ignored --nocapture --test-threads 1
