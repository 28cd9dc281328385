#!/usr/bin/env bash
# Instructions per proxied request, on each of the proxy's two engines, counted by callgrind:
# burrow runs under valgrind, wrk sends plain GETs (the fast path) or GETs whose `Connection`
# names a header (handed to hyper), and only the instructions spent during the load are counted
# (callgrind_control zeroes the counters before it and dumps them after). With a base revision,
# that revision is built in a git worktree and measured the same way, run for run, for a ratio.
#
# Usage: bench/callgrind.sh [BASE_REV]     (SECS per run, default 10; needs valgrind, wrk, nginx)
#        BASE_BIN=path/to/burrow bench/callgrind.sh BASE_REV   (that revision already built)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-10}"
BASE="${1:-}"
for tool in valgrind callgrind_control wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (Debian: apt-get install valgrind wrk nginx-light)" >&2; exit 1; }
done
source bench/lib.sh

echo "bench: building burrow (profiling profile: release with symbols) ..." >&2
cargo build --profile profiling --bin burrow --quiet
bins=("HEAD:$PWD/target/profiling/burrow")
if [ -n "$BASE" ]; then
  rev=$(git rev-parse --short "$BASE")
fi
if [ -n "$BASE" ] && [ -n "${BASE_BIN:-}" ]; then
  bins+=("$rev:$BASE_BIN")
elif [ -n "$BASE" ]; then
  tree="$PWD/target/bench-base"
  git worktree remove --force "$tree" 2>/dev/null || true
  git worktree add --force --detach "$tree" "$rev" >/dev/null
  echo "bench: building $rev ..." >&2
  (cd "$tree" && CARGO_TARGET_DIR="$PWD/../bench-base-target" cargo build --profile profiling --bin burrow --quiet)
  bins+=("$rev:$PWD/target/bench-base-target/profiling/burrow")
fi

UP=$(free_port)
upstream_1k "$UP"

# Ir per request for one binary and engine.
measure() {
  local bin=$1 engine=$2 port out pid reqs ir
  port=$(free_port); out="$work/cg.$RANDOM"
  BURROW_SERVER_ADDR="127.0.0.1:$(free_port)" BURROW_SUBDOMAIN=bench BURROW_LOG=warn \
  BURROW_PROXY_ADDR="127.0.0.1:$port" BURROW_ROUTES="/=http://127.0.0.1:$UP" \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >"$work/burrow.out" 2>"$work/burrow.err" \
    < <(sleep infinity) &
  pid=$!; pids+=($pid)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.2; done
  local hdr=()
  [ "$engine" = hyper ] && hdr=(-H "Connection: keep-alive, x-hop" -H "X-Hop: 1")
  wrk -t1 -c4 -d1s "${hdr[@]}" "http://127.0.0.1:$port/" >/dev/null   # warm-up
  callgrind_control -z "$pid" >/dev/null
  reqs=$(wrk -t1 -c16 -d"${SECS}s" "${hdr[@]}" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null
  sleep 0.5
  ir=$(for f in "$out".*; do callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'; done | sort -n | tail -1)
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -f "$out"*
  echo "$(( ir / reqs )) $reqs"
}

table="$work/table.md"
{
  echo "| engine | build | instructions per request | requests |"
  echo "|---|---|---|---|"
} >"$table"
declare -A IR
for engine in fast hyper; do
  for b in "${bins[@]}"; do
    name=${b%%:*}; bin=${b#*:}
    echo "bench: $engine path, $name, ${SECS}s under callgrind ..." >&2
    read -r ir reqs < <(measure "$bin" "$engine")
    IR[$engine,$name]=$ir
    echo "| $engine | $name | $ir | $reqs |" >>"$table"
  done
done
if [ -n "$BASE" ]; then
  echo >>"$table"
  for engine in fast hyper; do
    awk -v a="${IR[$engine,HEAD]}" -v b="${IR[$engine,$rev]}" -v e="$engine" \
      'BEGIN { printf "%s path: HEAD/%s = %.3f\n", e, "'"$rev"'", a / b }' >>"$table"
  done
fi
cat "$table"
if declare -F results_section >/dev/null; then results_section callgrind "$table"; fi
