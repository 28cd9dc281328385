#!/usr/bin/env bash
# Reverse-proxy benchmark: wrk against (1) the upstream directly, (2) burrow's in-process proxy,
# (3) nginx configured with the same three routes and upstream keep-alive; 1 KiB responses at 16
# and 128 connections. Everything runs on 127.0.0.1; needs `wrk` and `nginx` (Debian packages:
# apt-get install wrk nginx-light) and a release build of burrow (built here if missing).
#
# Each figure is the median of REPS runs (default 3), the targets interleaved so that drift in the
# machine's load spreads over all of them; the ratios of each run pair (burrow's run, then nginx's
# right after) are printed too. For the two proxies it also gives their own CPU time (user +
# system, from /proc/<pid>/stat) and context switches (/proc/<pid>/task/*/status) per request:
# what each request costs them, which the machine's drift moves far less than the rate.
#
# Usage: bench/proxy.sh [seconds-per-run (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
REPS="${REPS:-3}"
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing; install it (Debian: apt-get install wrk nginx-light)" >&2; exit 1; }
done
echo "bench: building burrow (release) ..." >&2
cargo build --release --quiet
BURROW="$PWD/target/release/burrow"

source bench/lib.sh
# Everything printed on stdout is also the results section this script writes at its end.
exec 3>&1 > >(tee "$work/results.md" >&3)
tee_pid=$!
UP_FRONT=$(free_port); UP_API=$(free_port); UP_ALT=$(free_port); NGX=$(free_port); BUR=$(free_port)
upstream_1k "$UP_FRONT" "$UP_API" "$UP_ALT"

# nginx as the reverse proxy with the same three routes and upstream keep-alive.
cat >"$work/proxy.conf" <<NGINX
worker_processes 2;
pid $work/proxy.pid;
error_log $work/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream front { server 127.0.0.1:$UP_FRONT; keepalive 256; }
  upstream api   { server 127.0.0.1:$UP_API;   keepalive 256; }
  upstream alt   { server 127.0.0.1:$UP_ALT;   keepalive 256; }
  server {
    listen 127.0.0.1:$NGX;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_buffering off;
    location /api/alt/ { proxy_pass http://alt; }
    location = /api/alt { proxy_pass http://alt; }
    location /api/ { proxy_pass http://api; }
    location = /api { proxy_pass http://api; }
    location / { proxy_pass http://front; }
  }
}
NGINX
nginx -c "$work/proxy.conf" -g 'daemon off;' & pids+=($!); NGX_PID=$!

BURROW_SERVER_ADDR="127.0.0.1:$(free_port)" BURROW_SUBDOMAIN=bench BURROW_LOG=warn \
BURROW_PROXY_ADDR="127.0.0.1:$BUR" \
BURROW_ROUTES="/api/alt=http://127.0.0.1:$UP_ALT,/api=http://127.0.0.1:$UP_API,/=http://127.0.0.1:$UP_FRONT" \
  "$BURROW" >"$work/burrow.out" 2>"$work/burrow.err" < <(sleep infinity) & pids+=($!); BUR_PID=$!
sleep 1

# The proxy's own processes, for its CPU time and context switches per request.
proxy_pids() { case $1 in burrow) echo "$BUR_PID" ;; nginx) echo "$NGX_PID" $(pgrep -P "$NGX_PID") ;; esac; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
switches() { cat $(for p in "$@"; do echo /proc/$p/task/*/status; done) | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run() { # name port conns -> "rps p50_ms p99_ms cpu_us_per_req switches_per_req"
  local out ps c0 x0
  ps=$(proxy_pids "$1")
  [ -z "$ps" ] || { c0=$(cpu_ticks $ps); x0=$(switches $ps); }
  out=$(wrk -t2 -c"$3" -d"${DUR}s" --latency "http://127.0.0.1:$2/api/v1/item" 2>&1)
  local rps p50 p99 n cpu=- sw=-
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  if [ -n "$ps" ]; then
    cpu=$(awk -v t=$(( $(cpu_ticks $ps) - c0 )) -v u="$TICK_US" -v n="$n" 'BEGIN{printf "%.2f", t*u/n}')
    sw=$(awk -v x=$(( $(switches $ps) - x0 )) -v n="$n" 'BEGIN{printf "%.2f", x/n}')
  fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $cpu $sw"
}
to_ms() { # wrk prints 1.23ms / 456.00us / 1.02s
  local v="$1"
  case "$v" in
    *us) awk -v x="${v%us}" 'BEGIN{printf "%.3f", x/1000}' ;;
    *ms) awk -v x="${v%ms}" 'BEGIN{printf "%.3f", x}' ;;
    *s)  awk -v x="${v%s}" 'BEGIN{printf "%.3f", x*1000}' ;;
    *) echo "$v" ;;
  esac
}

# Warm up every target once.
for p in $UP_API $BUR $NGX; do wrk -t1 -c4 -d1s "http://127.0.0.1:$p/api/x" >/dev/null; done

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A RPS P50 P99 CPU SW
for c in 16 128; do
  for rep in $(seq "$REPS"); do
    for t in upstream burrow nginx; do
      case $t in upstream) p=$UP_API ;; burrow) p=$BUR ;; nginx) p=$NGX ;; esac
      read -r rps p50 p99 cpu sw < <(run "$t" "$p" "$c")
      echo "bench: $c conns, $t, run $rep: $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $cpu us/req, $sw switches/req" >&2
      RPS[$t,$c]+="$rps "; P50[$t,$c]+="$p50 "; P99[$t,$c]+="$p99 "; CPU[$t,$c]+="$cpu "; SW[$t,$c]+="$sw "
    done
  done
done
echo
echo "| conns | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | switches/req |"
echo "|---|---|---|---|---|---|---|"
declare -A R
for c in 16 128; do
  for t in upstream burrow nginx; do
    rps=$(tr ' ' '\n' <<<"${RPS[$t,$c]}" | grep . | median)
    p50=$(tr ' ' '\n' <<<"${P50[$t,$c]}" | grep . | median)
    p99=$(tr ' ' '\n' <<<"${P99[$t,$c]}" | grep . | median)
    cpu=$(tr ' ' '\n' <<<"${CPU[$t,$c]}" | { grep -v '^-*$' || true; } | median)
    sw=$(tr ' ' '\n' <<<"${SW[$t,$c]}" | { grep -v '^-*$' || true; } | median)
    R[$t,$c]="$rps $p50 $p99"
    echo "| $c | $t | $rps | $p50 | $p99 | ${cpu:-} | ${sw:-} |"
  done
done
echo
for c in 16 128; do
  paste -d' ' <(tr ' ' '\n' <<<"${RPS[burrow,$c]}" | grep .) <(tr ' ' '\n' <<<"${RPS[nginx,$c]}" | grep .) \
    <(tr ' ' '\n' <<<"${P99[burrow,$c]}" | grep .) <(tr ' ' '\n' <<<"${P99[nginx,$c]}" | grep .) |
    awk -v c="$c" '{r = r sprintf(" %.2f", $1/$2); p = p sprintf(" %.2f", $3/$4)} END {print "run pairs at " c " conns: req/s ratio" r "; p99 ratio" p}'
done
echo
echo "| conns | burrow/nginx req/s | burrow p99 / nginx p99 | burrow/nginx proxy CPU per request |"
echo "|---|---|---|---|"
for c in 16 128; do
  read -r br _ bp99 <<<"${R[burrow,$c]}"
  read -r nr _ np99 <<<"${R[nginx,$c]}"
  bc=$(tr ' ' '\n' <<<"${CPU[burrow,$c]}" | grep . | median)
  nc=$(tr ' ' '\n' <<<"${CPU[nginx,$c]}" | grep . | median)
  awk -v c="$c" -v br="$br" -v nr="$nr" -v bp="$bp99" -v np="$np99" -v bc="$bc" -v nc="$nc" \
    'BEGIN{printf "| %s | %.2f | %.2f | %.2f |\n", c, br/nr, bp/np, bc/nc}'
done

exec >&3
# tee ends once it has written all it read; give it a moment.
for _ in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
results_section proxy "$work/results.md"
