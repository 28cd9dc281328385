#!/usr/bin/env bash
# Tunnel benchmark: burrow's native client vs frpc vs no tunnel, on the same real frps (0.65.0,
# or FRP_VERSION built by resources/build-frp.sh), in one run, over each wire protocol of WIRES
# (default v1; "v1 v2" needs frps 0.69+ and adds a v2-against-v1 table). For TLS + tcp_mux and for
# tcp_mux off (MUXES, default "mux nomux") it measures, per client:
#   - bulk throughput through a tcp tunnel, each direction (iperf3), MiB/s, and client CPU s/GiB
#     (with the kernel's part of it, and frps' CPU s/GiB for comparison);
#   - for each rate, the whole machine's CPU per unit and how busy its cores were, from which the
#     last tables derive what bounds each burrow/frpc ratio (the best ratio a burrow that cost no
#     CPU could reach, and a floor under its CPU ratio);
#   - HTTP through the http vhost tunnel (wrk, 1 KiB responses) at 1, 16, 128 connections:
#     req/s, p50, p99, client CPU s per 1,000 requests (and the kernel's part of it);
#   - new-connection rate through a tcp tunnel (connect, one 32-byte round trip, close; 16 at a
#     time), and client CPU s per 1,000 connections (and frps' CPU for them);
#   - RSS idle with one tunnel 5 s after start (VmRSS; RssAnon: the process's own memory without the file-backed
#     pages of its binary and libraries; Pss: shared library pages divided among their users),
#     peak RSS (VmHWM);
#   - start to usable, with one tunnel (tunnel_up for burrow; first successful request for frpc);
#   - stripped binary size.
# Medians over REPS runs (default 3); a markdown table on stdout, JSON in target/bench-tunnel.json.
# Needs wrk, iperf3 and nginx (Debian: apt-get install wrk iperf3 nginx-light). Loopback only.
#
# PROTOCOL=wss puts nginx in front of frps terminating TLS (a self-signed certificate; the clients
# do not verify it) and has both clients reach frps by wss through it, as behind a 443-only
# firewall; "TLS" in the tables then means that one TLS to nginx.
#
# Usage: bench/tunnel.sh [seconds-per-measurement (default 5)]
#        FRP_VERSION=0.70.1 WIRES="v1 v2" MUXES=mux REPS=1 bench/tunnel.sh    (wire v2 next to v1)
#        FRP_VERSION=0.70.1 PROTOCOL=wss MUXES=mux bench/tunnel.sh            (wss through nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
REPS="${REPS:-3}"
FRP_VERSION="${FRP_VERSION:-0.65.0}"
WIRES="${WIRES:-v1}"
MUXES="${MUXES:-mux nomux}"
PROTOCOL="${PROTOCOL:-tcp}"
case "$PROTOCOL" in tcp|wss) ;; *) echo "bench: PROTOCOL is tcp or wss, not $PROTOCOL" >&2; exit 2;; esac
for tool in wrk iperf3 nginx python3 openssl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (Debian: apt-get install wrk iperf3 nginx-light python3)" >&2; exit 1; }
done
echo "bench: building burrow (release) ..." >&2
# Two builds: one with the example would unify its dev-dependencies' features (tokio's
# multi-thread scheduler) into the measured binary, which ships without them.
cargo build --release --quiet --example connrate
cargo build --release --quiet --bin burrow
BURROW="$PWD/target/release/burrow"
CONNRATE="$PWD/target/release/examples/connrate"
if [ "$FRP_VERSION" = 0.65.0 ]; then
  FRP="$(bash resources/fetch-frp.sh)"
else
  FRP="$(bash resources/build-frp.sh "$FRP_VERSION" | awk '{print $2}')"
fi
source bench/lib.sh
# Everything printed on stdout is also the results section this script writes at its end.
exec 3>&1 > >(tee "$work/results.md" >&3)
tee_pid=$!
TOKEN="bench-$(date +%s)"

# Local services: 1 KiB over HTTP (nginx), an iperf3 server, a TCP echo server.
UP=$(free_port); IPERF=$(free_port); ECHO=$(free_port)
upstream_1k "$UP"
iperf3 -s -p "$IPERF" >/dev/null 2>&1 & pids+=($!)
"$CONNRATE" echo "$ECHO" & pids+=($!)

# wss_front PORT FRPS_PORT: nginx terminating TLS on PORT and forwarding frp's websocket to frps
# (its pid in `front`).
if [ "$PROTOCOL" = wss ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=frps.bench.test \
    -keyout "$work/front.key" -out "$work/front.crt" 2>/dev/null
fi
wss_front() {
  cat >"$work/front.conf" <<NGINX
worker_processes 1;
pid $work/front.pid;
error_log $work/front.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $work/front.crt;
    ssl_certificate_key $work/front.key;
    location = /~!frp {
      proxy_pass http://127.0.0.1:$2;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
NGINX
  nginx -c "$work/front.conf" -g 'daemon off;' & front=$!; pids+=("$front")
  wait_port "$1"
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# A field of a /proc file, in KiB; 0 when the file or the field is missing (old kernels have no
# smaps_rollup), so that the JSON stays valid.
proc_kib() { [ -r "$1" ] && awk -v k="$2:" '$1 == k {print $2; f=1} END {if (!f) print 0}' "$1" 2>/dev/null || echo 0; }
pss_kib() { proc_kib "/proc/$1/smaps_rollup" Pss; }
rss_kib() { proc_kib "/proc/$1/status" VmRSS; }
anon_kib() { proc_kib "/proc/$1/status" RssAnon; }
hwm_kib() { proc_kib "/proc/$1/status" VmHWM; }
# The whole machine's busy and total ticks (every process, the kernel, interrupts): "busy" is all
# but idle and iowait. With the cores saturated, a client's ratio to frpc can be no better than
# what the rest of the machine leaves (see the bounds table at the end).
# Fields: user nice system idle iowait irq softirq steal guest guest_nice. guest time is already in
# user and nice; steal is the hypervisor's, not this machine's, so it is left out of both.
machine_ticks() { awk '$1 == "cpu" {b=$2+$3+$4+$7+$8; print b, b+$5+$6; exit}' /proc/stat; }
TICK=$(getconf CLK_TCK)

# start_client burrow|frpc CONFIG TUNNELS VHOST_PORT: starts the client (its pid in `pid`) and
# returns once it is usable: `tunnel_up` for each tunnel for burrow, the first successful request
# through the http tunnel for frpc.
start_client() {
  case "$1" in
    burrow)
      BURROW_CONFIG="$2" BURROW_PROXY_ADDR=off BURROW_MODE=native BURROW_LOG=warn \
        "$BURROW" >"$work/burrow.out" 2>/dev/null < <(sleep 100000) & pid=$!; pids+=("$pid")
      for _ in $(seq 2000); do [ "$(grep -c '"tunnel_up"' "$work/burrow.out" 2>/dev/null || true)" -ge "$3" ] && return 0; sleep 0.005; done
      ;;
    frpc)
      "$FRP/frpc" -c "$2" >/dev/null 2>&1 & pid=$!; pids+=("$pid")
      for _ in $(seq 2000); do curl -s -o /dev/null -w '%{http_code}' -H "Host: web.bench.test" "http://127.0.0.1:$4/" 2>/dev/null | grep -q 200 && return 0; sleep 0.005; done
      ;;
  esac
  echo "bench: $1 did not become usable with $2" >&2; exit 1
}

results="$work/results.jsonl"
: >"$results"
record() { echo "$1" >>"$results"; }
# One measurement of the current case (run_case's mux, client, rep and wire): metric NAME VALUE.
metric() { record "{\"mux\":\"$mux\",\"wire\":\"$wire\",\"client\":\"$client\",\"rep\":$rep,\"metric\":\"$1\",\"value\":$2}"; }
py() { python3 -c "print($1)"; }

run_case() { # transport(mux|nomux) client(burrow|frpc|none) rep wire(v1|v2)
  local mux="$1" client="$2" rep="$3" wire="$4" tcpmux=true
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
  local server_port=$BIND front=0 reach=""
  if [ "$PROTOCOL" = wss ]; then
    server_port=$(free_port)
    wss_front "$server_port" "$BIND"
    reach='transport.protocol = "wss"'
  fi
  # One tunnel for start-up and idle memory; the tcp tunnels added for the rest.
  cat >"$work/client1.toml" <<TOML
serverAddr = "127.0.0.1"
serverPort = $server_port
auth.token = "$TOKEN"
transport.tcpMux = $tcpmux
transport.tls.enable = true
$reach
$([ "$wire" = v1 ] || echo "transport.wireProtocol = \"$wire\"")

[[proxies]]
name = "web"
type = "http"
localPort = $UP
subdomain = "web"
TOML
  cp "$work/client1.toml" "$work/client.toml"
  cat >>"$work/client.toml" <<TOML

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
  local pid=0 start_ms="null" http_port=$VHOST bulk_port=$REMOTE echo_port=$REMOTE_ECHO host="web.bench.test"
  local idle=0 idle_anon=0 idle_pss=0
  if [ "$client" = none ]; then
    http_port=$UP; bulk_port=$IPERF; echo_port=$ECHO; host="127.0.0.1"
  else
    # One tunnel: start to usable, then idle memory 5 s after start.
    local t0
    t0=$(date +%s%N)
    start_client "$client" "$work/client1.toml" 1 "$VHOST"
    start_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    sleep 5
    idle=$(rss_kib "$pid"); idle_anon=$(anon_kib "$pid"); idle_pss=$(pss_kib "$pid")
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    # All three tunnels for the traffic.
    start_client "$client" "$work/client.toml" 3 "$VHOST"
    wait_port "$REMOTE" && wait_port "$REMOTE_ECHO" \
      || { echo "bench: the tcp tunnels did not come up ($mux, $client)" >&2; exit 1; }
    sleep 1
  fi
  # Bulk, each direction: client, frps and machine CPU around each.
  local c0 c1 k0 k1 f0 f1 m0 m1 t0m t1m dir
  local cpu_sum=0 sys_sum=0 frps_sum=0 bytes_sum=0
  for dir in up down; do
    local rflag="" bps bytes
    [ "$dir" = down ] && rflag="-R"
    c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k0=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    f0=$(cpu_ticks "$frps")
    read -r m0 t0m < <(machine_ticks)
    # shellcheck disable=SC2086
    read -r bps bytes < <(iperf3 -c 127.0.0.1 -p "$bulk_port" -t "$DUR" $rflag -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"], e["bytes"])') \
      || { echo "bench: iperf3 ($dir) through port $bulk_port failed; is the tunnel up? ($mux, $client)" >&2; exit 1; }
    read -r m1 t1m < <(machine_ticks)
    c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k1=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    f1=$(cpu_ticks "$frps")
    [ "$bytes" -ge $((1 << 30)) ] || [ "$DUR" -ge 10 ] \
      || echo "bench: warning: bulk $dir moved $((bytes >> 20)) MiB in $DUR s ($mux, $client); the goals ask for 1 GiB or 10 s: run bench/tunnel.sh 10" >&2
    metric "bulk_${dir}_mib_s" "$(py "round($bps/8/2**20,1)")"
    metric "bulk_${dir}_machine_cpu_s_per_gib" "$(py "round(($m1-$m0)/$TICK/($bytes/2**30),3)")"
    metric "bulk_${dir}_machine_busy_pct" "$(py "round(100*($m1-$m0)/max(1,$t1m-$t0m),1)")"
    if [ "$pid" != 0 ]; then
      metric "bulk_${dir}_cpu_s_per_gib" "$(py "round(($c1-$c0)/$TICK/($bytes/2**30),3)")"
      metric "bulk_${dir}_kernel_cpu_s_per_gib" "$(py "round(($k1-$k0)/$TICK/($bytes/2**30),3)")"
    fi
    cpu_sum=$((cpu_sum + c1 - c0)); sys_sum=$((sys_sum + k1 - k0)); frps_sum=$((frps_sum + f1 - f0)); bytes_sum=$((bytes_sum + bytes))
  done
  local bulk_cpu_per_gib bulk_sys_per_gib frps_per_gib
  bulk_cpu_per_gib=$(py "round($cpu_sum/$TICK/($bytes_sum/2**30),3) if $pid else 'null'")
  bulk_sys_per_gib=$(py "round($sys_sum/$TICK/($bytes_sum/2**30),3) if $pid else 'null'")
  frps_per_gib=$(py "round($frps_sum/$TICK/($bytes_sum/2**30),3) if $pid else 'null'")
  metric "bulk_cpu_s_per_gib" "$bulk_cpu_per_gib"
  metric "bulk_kernel_cpu_s_per_gib" "$bulk_sys_per_gib"
  metric "bulk_frps_cpu_s_per_gib" "$frps_per_gib"
  # New connections through the tcp tunnel.
  local rate ok failed
  c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  k0=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
  local conn_out
  f0=$(cpu_ticks "$frps")
  read -r m0 t0m < <(machine_ticks)
  conn_out=$("$CONNRATE" rate "$echo_port" "$DUR" 16) || conn_out=""
  [ -n "$conn_out" ] || { echo "bench: connrate failed against port $echo_port" >&2; conn_out="0 0 1"; }
  read -r rate ok failed <<<"$conn_out"
  read -r m1 t1m < <(machine_ticks)
  f1=$(cpu_ticks "$frps")
  c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
  k1=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
  metric "newconn_per_s" "$rate"
  metric "newconn_failed" "$failed"
  if [ "$ok" -gt 0 ]; then
    metric "newconn_machine_cpu_s_per_1k" "$(py "round(($m1-$m0)/$TICK/($ok/1000),4)")"
    metric "newconn_machine_busy_pct" "$(py "round(100*($m1-$m0)/max(1,$t1m-$t0m),1)")"
  fi
  if [ "$pid" != 0 ] && [ "$ok" -gt 0 ]; then
    metric "newconn_cpu_s_per_1k" "$(py "round(($c1-$c0)/$TICK/($ok/1000),4)")"
    metric "newconn_kernel_cpu_s_per_1k" "$(py "round(($k1-$k0)/$TICK/($ok/1000),4)")"
    metric "newconn_frps_cpu_s_per_1k" "$(py "round(($f1-$f0)/$TICK/($ok/1000),4)")"
  fi
  # HTTP through the vhost tunnel.
  for conns in 1 16 128; do
    c0=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k0=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    local out threads=2
    [ "$conns" = 1 ] && threads=1
    read -r m0 t0m < <(machine_ticks)
    out=$(wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency -H "Host: $host" "http://127.0.0.1:$http_port/" 2>&1)
    read -r m1 t1m < <(machine_ticks)
    c1=$( [ "$pid" != 0 ] && cpu_ticks "$pid" || echo 0 )
    k1=$( [ "$pid" != 0 ] && sys_ticks "$pid" || echo 0 )
    python3 - "$mux" "$client" "$rep" "$conns" "$((c1-c0))" "$TICK" "$pid" "$((k1-k0))" "$((m1-m0))" "$((t1m-t0m))" "$wire" >>"$results" <<PY
import json, re, sys
mux, client, rep, conns, ticks, tick, pid, kticks, mticks, tticks, wire = sys.argv[1:]
out = """$out"""
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    f = float(m.group(1))
    return {"us": f / 1000, "ms": f, "s": f * 1000}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
base = {"mux": mux, "wire": wire, "client": client, "rep": int(rep)}
for k, v in [(f"http_rps_c{conns}", round(rps)), (f"http_p50_ms_c{conns}", p50), (f"http_p99_ms_c{conns}", p99),
             (f"http_machine_busy_pct_c{conns}", round(100 * int(mticks) / max(1, int(tticks)), 1))]:
    print(json.dumps({**base, "metric": k, "value": v}))
if reqs:
    print(json.dumps({**base, "metric": f"http_machine_cpu_s_per_1k_c{conns}", "value": round(int(mticks) / int(tick) / (reqs / 1000), 4)}))
if pid != "0" and reqs:
    print(json.dumps({**base, "metric": f"http_cpu_s_per_1k_c{conns}", "value": round(int(ticks) / int(tick) / (reqs / 1000), 4)}))
    print(json.dumps({**base, "metric": f"http_kernel_cpu_s_per_1k_c{conns}", "value": round(int(kticks) / int(tick) / (reqs / 1000), 4)}))
PY
  done
  if [ "$pid" != 0 ]; then
    metric "rss_idle_mib" "$(py "round($idle/1024,1)")"
    metric "rss_idle_anon_mib" "$(py "round($idle_anon/1024,1)")"
    metric "pss_idle_mib" "$(py "round($idle_pss/1024,1)")"
    metric "rss_peak_mib" "$(py "round($(hwm_kib "$pid")/1024,1)")"
    metric "start_to_usable_ms" "$start_ms"
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  fi
  kill "$frps" 2>/dev/null || true; wait "$frps" 2>/dev/null || true
  [ "$front" = 0 ] || { kill "$front" 2>/dev/null || true; wait "$front" 2>/dev/null || true; }
  echo "bench: $mux $wire $client run $rep done" >&2
}

first_wire="${WIRES%% *}"
for rep in $(seq "$REPS"); do
  for mux in $MUXES; do
    for wire in $WIRES; do
      for client in burrow frpc none; do
        # No tunnel is the same whatever the wire: measured once.
        [ "$client" = none ] && [ "$wire" != "$first_wire" ] && continue
        run_case "$mux" "$client" "$rep" "$wire"
      done
    done
  done
done

mkdir -p target
python3 - "$results" "$(stat -c %s "$BURROW")" "$(stat -c %s "$FRP/frpc")" "$FRP_VERSION" "$WIRES" "$MUXES" "$PROTOCOL" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sizes = {"burrow": int(sys.argv[2]), "frpc": int(sys.argv[3])}
frp, wires, muxes = sys.argv[4], sys.argv[5].split(), sys.argv[6].split()
med_w = {}
for r in rows:
    if r["value"] is None:
        continue
    # "No tunnel" rows stand for every wire.
    for w in (wires if r["client"] == "none" else [r["wire"]]):
        med_w.setdefault((r["mux"], w, r["client"], r["metric"]), []).append(r["value"])
med_w = {k: statistics.median(v) for k, v in med_w.items()}
# The tables below are for the first wire; the v2 table at the end puts the others beside it.
med = {(m, c, k): v for (m, w, c, k), v in med_w.items() if w == wires[0]}
metrics = []
for r in rows:
    if r["metric"] not in metrics:
        metrics.append(r["metric"])
out = {"frps": frp, "medians": {f"{m}/{w}/{c}/{k}": v for (m, w, c, k), v in med_w.items()}, "binary_bytes": sizes, "runs": rows}
json.dump(out, open("target/bench-tunnel.json", "w"), indent=1)
proto = sys.argv[7]
tls = "wss through nginx" if proto == "wss" else "TLS"
titles = [(m, t) for m, t in [("mux", f"{tls} + tcp_mux"), ("nomux", f"{tls}, tcp_mux off")] if m in muxes]
for mux, title in titles:
    print(f"\n### {title}, frps and frpc {frp}, wire {wires[0]}\n")
    print("| metric | burrow | frpc | no tunnel | burrow/frpc | burrow/no tunnel |")
    print("|---|---|---|---|---|---|")
    for k in metrics:
        b, f, n = (med.get((mux, c, k)) for c in ("burrow", "frpc", "none"))
        ratio = lambda a, z: f"{a / z:.2f}" if a is not None and z else ""
        show = lambda v: "" if v is None else (f"{v:g}")
        print(f"| {k} | {show(b)} | {show(f)} | {show(n)} | {ratio(b, f)} | {ratio(b, n)} |")
print(f"\nstripped binary: burrow {sizes['burrow']/2**20:.1f} MiB, frpc {sizes['frpc']/2**20:.1f} MiB\n")

# What bounds each rate ratio. A rate is the busy share of the cores over the whole machine's CPU
# per unit: r = B / M. The client's part of M is its own CPU, C; so a burrow that cost nothing,
# the rest of the machine (frps, the load generator, the local server, the kernel's work for them)
# staying as measured and the cores as busy, would make B_burrow / (M_burrow - C_burrow), and could
# beat frpc by no more than that over frpc's B_frpc / M_frpc. The second ceiling takes away only
# burrow's user-space CPU, U: its code, not the system calls it makes. One connection at a time
# is serial instead: each request waits for every process in turn, so there the time per request
# takes the place of M / B.
print("### What bounds the rate ratios\n")
print("Ceilings: the best burrow/frpc ratio if burrow's own CPU were zero (all of it, or only its")
print("user-space part: its code, not its system calls), everything else staying as measured. Above")
print("the second ceiling, a goal takes fewer or cheaper system calls, not faster code.\n")
print("| transport | measure | burrow/frpc | goal | machine busy % burrow / frpc | ceiling: no CPU | ceiling: no user CPU |")
print("|---|---|---|---|---|---|---|")
def g(mux, client, k):
    return med.get((mux, client, k))
for mux, title in [(m, t.replace("TLS, ", "")) for m, t in titles]:
    for name, rate, mach, cpu, kern, busy, goal in [
        ("bulk up", "bulk_up_mib_s", "bulk_up_machine_cpu_s_per_gib", "bulk_up_cpu_s_per_gib", "bulk_up_kernel_cpu_s_per_gib", "bulk_up_machine_busy_pct", 1.3),
        ("bulk down", "bulk_down_mib_s", "bulk_down_machine_cpu_s_per_gib", "bulk_down_cpu_s_per_gib", "bulk_down_kernel_cpu_s_per_gib", "bulk_down_machine_busy_pct", 1.3),
        ("new connections", "newconn_per_s", "newconn_machine_cpu_s_per_1k", "newconn_cpu_s_per_1k", "newconn_kernel_cpu_s_per_1k", "newconn_machine_busy_pct", 1.5),
        ("HTTP c1 (serial)", "http_rps_c1", None, "http_cpu_s_per_1k_c1", "http_kernel_cpu_s_per_1k_c1", "http_machine_busy_pct_c1", 1.2),
        ("HTTP c16", "http_rps_c16", "http_machine_cpu_s_per_1k_c16", "http_cpu_s_per_1k_c16", "http_kernel_cpu_s_per_1k_c16", "http_machine_busy_pct_c16", 1.2),
        ("HTTP c128", "http_rps_c128", "http_machine_cpu_s_per_1k_c128", "http_cpu_s_per_1k_c128", "http_kernel_cpu_s_per_1k_c128", "http_machine_busy_pct_c128", 1.2),
    ]:
        rb, rf, cb, kb = g(mux, "burrow", rate), g(mux, "frpc", rate), g(mux, "burrow", cpu), g(mux, "burrow", kern)
        bb, bf = g(mux, "burrow", busy), g(mux, "frpc", busy)
        if None in (rb, rf, cb, kb, bb, bf) or not rb or not rf or not bf:
            continue
        if mach is None:  # serial: seconds per request (the CPU figures are per 1,000)
            mb, mf, cb, kb, scale = 1 / rb, 1 / rf, cb / 1000, kb / 1000, 1
        else:
            mb, mf, scale = g(mux, "burrow", mach), g(mux, "frpc", mach), bb / bf
        if None in (mb, mf) or mb <= cb:
            continue
        ceil_all, ceil_user = scale * mf / (mb - cb), scale * mf / (mb - (cb - kb))
        print(f"| {title} | {name} | {rb / rf:.2f} | ≥ {goal} | {bb:g} / {bf:g} | {ceil_all:.2f} | {ceil_user:.2f} |")
print()
# The CPU goals: burrow's system calls cost kernel time whatever its code does, so with the same
# system calls its kernel time alone, against frpc's whole CPU, is a floor under the ratio.
print("| transport | client CPU per | burrow/frpc | goal | floor at the same system calls: burrow's kernel time / frpc's CPU |")
print("|---|---|---|---|---|")
for mux, title in [(m, t.replace("TLS, ", "")) for m, t in titles]:
    for name, cpu, kern in [
        ("GiB (bulk)", "bulk_cpu_s_per_gib", "bulk_kernel_cpu_s_per_gib"),
        ("1k connections", "newconn_cpu_s_per_1k", "newconn_kernel_cpu_s_per_1k"),
        ("1k requests c1", "http_cpu_s_per_1k_c1", "http_kernel_cpu_s_per_1k_c1"),
        ("1k requests c16", "http_cpu_s_per_1k_c16", "http_kernel_cpu_s_per_1k_c16"),
        ("1k requests c128", "http_cpu_s_per_1k_c128", "http_kernel_cpu_s_per_1k_c128"),
    ]:
        cb, cf, kb = g(mux, "burrow", cpu), g(mux, "frpc", cpu), g(mux, "burrow", kern)
        if None in (cb, cf, kb) or not cf:
            continue
        print(f"| {title} | {name} | {cb / cf:.2f} | ≤ 0.33 | {kb / cf:.2f} |")
print()
# Wire v2 beside v1: the same rows, the same frps, one run.
for w in wires[1:]:
    base = wires[0]
    print(f"### Wire {w} beside {base} (frps and frpc {frp})\n")
    print(f"| transport | metric | burrow {base} | burrow {w} | burrow {w}/{base} | frpc {w} | burrow/frpc, {w} |")
    print("|---|---|---|---|---|---|---|")
    for mux, title in titles:
        for k in ["bulk_up_mib_s", "bulk_down_mib_s", "http_rps_c1", "http_rps_c16", "http_rps_c128",
                  "http_p99_ms_c16", "bulk_cpu_s_per_gib", "http_cpu_s_per_1k_c16"]:
            b1, b2, f2 = (med_w.get((mux, wv, c, k)) for wv, c in [(base, "burrow"), (w, "burrow"), (w, "frpc")])
            ratio = lambda a, z: f"{a / z:.2f}" if a is not None and z else ""
            show = lambda v: "" if v is None else f"{v:g}"
            print(f"| {title} | {k} | {show(b1)} | {show(b2)} | {ratio(b2, b1)} | {show(f2)} | {ratio(b2, f2)} |")
    print()
PY

exec >&3
# tee ends once it has written all it read; give it a moment.
for _ in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
section=tunnel
[ "$FRP_VERSION $WIRES" = "0.65.0 v1" ] || section="tunnel-$FRP_VERSION-${WIRES// /-}"
[ "$PROTOCOL" = tcp ] || section="$section-$PROTOCOL"
results_section "$section" "$work/results.md"
