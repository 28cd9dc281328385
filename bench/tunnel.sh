#!/usr/bin/env bash
# Tunnel benchmark: burrow's native client vs frpc 0.65.0 vs no tunnel, on the same real frps
# 0.65.0, in one run. For TLS + tcp_mux and for tcp_mux off it measures, per client:
#   - bulk throughput through a tcp tunnel, each direction (iperf3), MiB/s, and client CPU s/GiB
#     (with the kernel's part of it, and frps' CPU s/GiB for comparison);
#   - HTTP through the http vhost tunnel (wrk, 1 KiB responses) at 1, 16, 128 connections:
#     req/s, p50, p99, client CPU s per 1,000 requests (and the kernel's part of it);
#   - new-connection rate through a tcp tunnel (connect, one 32-byte round trip, close; 16 at a
#     time), and client CPU s per 1,000 connections (and frps' CPU for them);
#   - RSS idle 5 s after start (VmRSS; RssAnon: the process's own memory without the file-backed
#     pages of its binary and libraries; Pss: shared library pages divided among their users),
#     peak RSS (VmHWM);
#   - start to usable (tunnel_up for burrow; first successful request for frpc);
#   - stripped binary size.
# Medians over REPS runs (default 3); a markdown table on stdout, JSON in target/bench-tunnel.json.
# Needs wrk, iperf3 and nginx (Debian: apt-get install wrk iperf3 nginx-light). Loopback only.
#
# Usage: bench/tunnel.sh [seconds-per-measurement (default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
REPS="${REPS:-3}"
for tool in wrk iperf3 nginx python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (Debian: apt-get install wrk iperf3 nginx-light python3)" >&2; exit 1; }
done
echo "bench: building burrow (release) ..." >&2
# Two builds: one with the example would unify its dev-dependencies' features (tokio's
# multi-thread scheduler) into the measured binary, which ships without them.
cargo build --release --quiet --example connrate
cargo build --release --quiet --bin burrow
BURROW="$PWD/target/release/burrow"
CONNRATE="$PWD/target/release/examples/connrate"
FRP="$(bash resources/fetch-frp.sh)"
source bench/lib.sh
TOKEN="bench-$(date +%s)"

# Local services: 1 KiB over HTTP (nginx), an iperf3 server, a TCP echo server.
UP=$(free_port); IPERF=$(free_port); ECHO=$(free_port)
body=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat >"$work/up.conf" <<NGINX
worker_processes 1;
pid $work/up.pid;
error_log $work/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 "$body"; } } }
NGINX
nginx -c "$work/up.conf" -g 'daemon off;' & pids+=($!)
iperf3 -s -p "$IPERF" >/dev/null 2>&1 & pids+=($!)
"$CONNRATE" echo "$ECHO" & pids+=($!)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# A field of a /proc file, in KiB; 0 when the file or the field is missing (old kernels have no
# smaps_rollup), so that the JSON stays valid.
proc_kib() { [ -r "$1" ] && awk -v k="$2:" '$1 == k {print $2; f=1} END {if (!f) print 0}' "$1" 2>/dev/null || echo 0; }
pss_kib() { proc_kib "/proc/$1/smaps_rollup" Pss; }
rss_kib() { proc_kib "/proc/$1/status" VmRSS; }
anon_kib() { proc_kib "/proc/$1/status" RssAnon; }
hwm_kib() { proc_kib "/proc/$1/status" VmHWM; }
TICK=$(getconf CLK_TCK)
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

results="$work/results.jsonl"
: >"$results"
record() { echo "$1" >>"$results"; }

run_case() { # transport(mux|nomux) client(burrow|frpc|none) rep
  local mux="$1" client="$2" rep="$3" tcpmux=true
  [ "$mux" = nomux ] && tcpmux=false
  local BIND VHOST REMOTE REMOTE_ECHO
  BIND=$(free_port); VHOST=$(free_port); REMOTE=$(free_port); REMOTE_ECHO=$(free_port)
  cat >"$work/frps.toml" <<TOML
bindAddr = "127.0.0.1"
bindPort = $BIND
vhostHTTPPort = $VHOST
subDomainHost = "bench.test"
auth.token = "$TOKEN"
transport.tcpMux = $tcpmux
log.to = "$work/frps.log"
TOML
  "$FRP/frps" -c "$work/frps.toml" & local frps=$!
  wait_port "$BIND"; wait_port "$VHOST"
  cat >"$work/client.toml" <<TOML
serverAddr = "127.0.0.1"
serverPort = $BIND
auth.token = "$TOKEN"
transport.tcpMux = $tcpmux
transport.tls.enable = true

[[proxies]]
name = "web"
type = "http"
localPort = $UP
subdomain = "web"

[[proxies]]
name = "bulk"
type = "tcp"
localPort = $IPERF
remotePort = $REMOTE

[[proxies]]
name = "echo"
type = "tcp"
localPort = $ECHO
remotePort = $REMOTE_ECHO
TOML
  local pid=0 t0 start_ms="null" http_port=$VHOST bulk_port=$REMOTE echo_port=$REMOTE_ECHO host="web.bench.test"
  t0=$(date +%s%N)
  case "$client" in
    burrow)
      BURROW_CONFIG="$work/client.toml" BURROW_PROXY_ADDR=off BURROW_MODE=native BURROW_LOG=warn \
        "$BURROW" >"$work/burrow.out" 2>/dev/null < <(sleep 100000) & pid=$!
      for _ in $(seq 400); do [ "$(grep -c '"tunnel_up"' "$work/burrow.out" 2>/dev/null || true)" -ge 3 ] && break; sleep 0.005; done
      start_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      ;;
    frpc)
      "$FRP/frpc" -c "$work/client.toml" >/dev/null 2>&1 & pid=$!
      for _ in $(seq 2000); do curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$VHOST/" 2>/dev/null | grep -q 200 && break; sleep 0.005; done
      start_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      ;;
    none) http_port=$UP; bulk_port=$IPERF; echo_port=$ECHO; host="127.0.0.1" ;;
  esac
  sleep 5
  local idle=0 idle_anon=0 idle_pss=0
  [ "$pid" != 0 ] && idle=$(rss_kib "$pid") && idle_anon=$(anon_kib "$pid") && idle_pss=$(pss_kib "$pid")
  # Bulk, both directions.
  local c0 c1 k0 k1 f0 f1 up_bps down_bps up_bytes down_bytes
  c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  k0=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
  f0=$(cpu_ticks "$frps")
  read -r up_bps up_bytes < <(iperf3 -c 127.0.0.1 -p "$bulk_port" -t "$DUR" -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"], e["bytes"])')
  read -r down_bps down_bytes < <(iperf3 -c 127.0.0.1 -p "$bulk_port" -t "$DUR" -R -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"], e["bytes"])')
  c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  k1=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
  f1=$(cpu_ticks "$frps")
  local bulk_cpu_per_gib bulk_sys_per_gib frps_per_gib
  bulk_cpu_per_gib=$(python3 -c "print(round(($c1-$c0)/$TICK/(($up_bytes+$down_bytes)/2**30),3) if $pid else 'null')")
  bulk_sys_per_gib=$(python3 -c "print(round(($k1-$k0)/$TICK/(($up_bytes+$down_bytes)/2**30),3) if $pid else 'null')")
  frps_per_gib=$(python3 -c "print(round(($f1-$f0)/$TICK/(($up_bytes+$down_bytes)/2**30),3) if $pid else 'null')")
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"bulk_up_mib_s\",\"value\":$(python3 -c "print(round($up_bps/8/2**20,1))")}"
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"bulk_down_mib_s\",\"value\":$(python3 -c "print(round($down_bps/8/2**20,1))")}"
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"bulk_cpu_s_per_gib\",\"value\":$bulk_cpu_per_gib}"
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"bulk_kernel_cpu_s_per_gib\",\"value\":$bulk_sys_per_gib}"
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"bulk_frps_cpu_s_per_gib\",\"value\":$frps_per_gib}"
  # New connections through the tcp tunnel.
  local rate ok failed
  c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  local conn_out
  f0=$(cpu_ticks "$frps")
  conn_out=$("$CONNRATE" rate "$echo_port" "$DUR" 16) || conn_out=""
  [ -n "$conn_out" ] || { echo "bench: connrate failed against port $echo_port" >&2; conn_out="0 0 1"; }
  read -r rate ok failed <<<"$conn_out"
  f1=$(cpu_ticks "$frps")
  c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"newconn_per_s\",\"value\":$rate}"
  record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"newconn_failed\",\"value\":$failed}"
  if [ "$pid" != 0 ] && [ "$ok" -gt 0 ]; then
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"newconn_cpu_s_per_1k\",\"value\":$(python3 -c "print(round(($c1-$c0)/$TICK/($ok/1000),4))")}"
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"newconn_frps_cpu_s_per_1k\",\"value\":$(python3 -c "print(round(($f1-$f0)/$TICK/($ok/1000),4))")}"
  fi
  # HTTP through the vhost tunnel.
  for conns in 1 16 128; do
    c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k0=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    local out threads=2
    [ "$conns" = 1 ] && threads=1
    out=$(wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency -H "Host: $host" "http://127.0.0.1:$http_port/" 2>&1)
    c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k1=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    python3 - "$mux" "$client" "$rep" "$conns" "$((c1-c0))" "$TICK" "$pid" "$((k1-k0))" >>"$results" <<PY
import json, re, sys
mux, client, rep, conns, ticks, tick, pid, kticks = sys.argv[1:]
out = """$out"""
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    f = float(m.group(1))
    return {"us": f / 1000, "ms": f, "s": f * 1000}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
base = {"mux": mux, "client": client, "rep": int(rep)}
for k, v in [(f"http_rps_c{conns}", round(rps)), (f"http_p50_ms_c{conns}", p50), (f"http_p99_ms_c{conns}", p99)]:
    print(json.dumps({**base, "metric": k, "value": v}))
if pid != "0":
    print(json.dumps({**base, "metric": f"http_cpu_s_per_1k_c{conns}", "value": round(int(ticks) / int(tick) / (reqs / 1000), 4)}))
    print(json.dumps({**base, "metric": f"http_kernel_cpu_s_per_1k_c{conns}", "value": round(int(kticks) / int(tick) / (reqs / 1000), 4)}))
PY
  done
  if [ "$pid" != 0 ]; then
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"rss_idle_mib\",\"value\":$(python3 -c "print(round($idle/1024,1))")}"
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"rss_idle_anon_mib\",\"value\":$(python3 -c "print(round($idle_anon/1024,1))")}"
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"pss_idle_mib\",\"value\":$(python3 -c "print(round($idle_pss/1024,1))")}"
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"rss_peak_mib\",\"value\":$(python3 -c "print(round($(hwm_kib "$pid")/1024,1))")}"
    record "{\"mux\":\"$mux\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"start_to_usable_ms\",\"value\":$start_ms}"
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  fi
  kill "$frps" 2>/dev/null || true; wait "$frps" 2>/dev/null || true
  echo "bench: $mux $client run $rep done" >&2
}

for rep in $(seq "$REPS"); do
  for mux in mux nomux; do
    for client in burrow frpc none; do
      run_case "$mux" "$client" "$rep"
    done
  done
done

mkdir -p target
python3 - "$results" "$(stat -c %s "$BURROW")" "$(stat -c %s "$FRP/frpc")" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sizes = {"burrow": int(sys.argv[2]), "frpc": int(sys.argv[3])}
med = {}
for r in rows:
    if r["value"] is None:
        continue
    med.setdefault((r["mux"], r["client"], r["metric"]), []).append(r["value"])
med = {k: statistics.median(v) for k, v in med.items()}
metrics = []
for r in rows:
    if r["metric"] not in metrics:
        metrics.append(r["metric"])
out = {"medians": {f"{m}/{c}/{k}": v for (m, c, k), v in med.items()}, "binary_bytes": sizes, "runs": rows}
json.dump(out, open("target/bench-tunnel.json", "w"), indent=1)
for mux, title in [("mux", "TLS + tcp_mux"), ("nomux", "TLS, tcp_mux off")]:
    print(f"\n### {title}\n")
    print("| metric | burrow | frpc | no tunnel | burrow/frpc | burrow/no tunnel |")
    print("|---|---|---|---|---|---|")
    for k in metrics:
        b, f, n = (med.get((mux, c, k)) for c in ("burrow", "frpc", "none"))
        ratio = lambda a, z: f"{a / z:.2f}" if a is not None and z else ""
        show = lambda v: "" if v is None else (f"{v:g}")
        print(f"| {k} | {show(b)} | {show(f)} | {show(n)} | {ratio(b, f)} | {ratio(b, n)} |")
print(f"\nstripped binary: burrow {sizes['burrow']/2**20:.1f} MiB, frpc {sizes['frpc']/2**20:.1f} MiB\n")
PY
