#!/usr/bin/env bash
# Recovery benchmark: how long a public URL stays dead after the network comes back, burrow beside
# frpc on the same real frps (0.65.0), with tcp_mux on and off.
#
# A relay between client and frps black-holes the path, the way sleep or a new Wi-Fi does: every
# open connection swallows what is sent both ways and never closes, new connections are accepted
# and swallowed too. After the outage (OUTAGE_MUX, default 60 s, longer than frps' own detection;
# OUTAGE_NOMUX, default 20 s) the path is restored for new connections while the old ones stay
# dead. Measured: seconds from the restore to the first request served through the http tunnel,
# polled every 100 ms, for frpc, burrow on its own, and burrow told `{"cmd":"reconnect"}` at the
# restore (what the Electron module does on resume). Also burrow's idle wake-ups per minute
# (epoll_wait returns, strace -f over 60 s, one tunnel, tcp_mux on). Medians over REPS (default 1).
#
# Usage: bench/recovery.sh     (needs python3, curl, strace; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${REPS:-1}"
OUTAGE_MUX="${OUTAGE_MUX:-60}"
OUTAGE_NOMUX="${OUTAGE_NOMUX:-20}"
for tool in python3 curl strace; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (Debian: apt-get install $tool)" >&2; exit 1; }
done
echo "bench: building burrow (release) ..." >&2
cargo build --release --quiet --bin burrow
BURROW="$PWD/target/release/burrow"
FRP="$(bash resources/fetch-frp.sh)"
source bench/lib.sh
exec 3>&1 > >(tee "$work/results.md" >&3)
TOKEN="bench-$(date +%s)"
UP=$(free_port)
python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 & pids+=($!)
wait_port "$UP"

# The relay: SIGUSR1 black-holes the path, SIGUSR2 restores it for new connections only.
cat >"$work/relay.py" <<'PY'
import signal, socket, sys, threading
listen, target = int(sys.argv[1]), int(sys.argv[2])
state = {"hole": False, "gen": 0}
def pump(a, b, gen):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if state["hole"] or state["gen"] != gen:
                continue
            b.sendall(d)
    except OSError:
        pass
    if not state["hole"] and state["gen"] == gen:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def on(*_):
    state["hole"] = True
    state["gen"] += 1
def off(*_):
    state["hole"] = False
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(128)
while True:
    c, _ = srv.accept()
    t = socket.create_connection(("127.0.0.1", target))
    gen = state["gen"] if not state["hole"] else -1
    for a, b in ((c, t), (t, c)):
        threading.Thread(target=pump, args=(a, b, gen), daemon=True).start()
PY

served() { curl -s -o /dev/null -m 1 -w '%{http_code}' -H "Host: web.bench.test" "http://127.0.0.1:$1/" 2>/dev/null | grep -q 200; }

results="$work/results.jsonl"; : >"$results"
run_case() { # mux client(frpc|burrow|burrow+reconnect) rep
  local mux=$1 client=$2 rep=$3 tcpmux=true outage=$OUTAGE_MUX
  [ "$mux" = nomux ] && { tcpmux=false; outage=$OUTAGE_NOMUX; }
  local BIND VHOST RELAY
  BIND=$(free_port); VHOST=$(free_port); RELAY=$(free_port)
  printf 'bindAddr = "127.0.0.1"\nbindPort = %s\nvhostHTTPPort = %s\nsubDomainHost = "bench.test"\nauth.token = "%s"\ntransport.tcpMux = %s\nlog.to = "%s/frps.log"\n' \
    "$BIND" "$VHOST" "$TOKEN" "$tcpmux" "$work" >"$work/frps.toml"
  "$FRP/frps" -c "$work/frps.toml" & local frps=$!
  wait_port "$BIND"
  python3 "$work/relay.py" "$RELAY" "$BIND" & local relay=$!
  wait_port "$RELAY"
  printf 'serverAddr = "127.0.0.1"\nserverPort = %s\nauth.token = "%s"\ntransport.tcpMux = %s\n\n[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = %s\nsubdomain = "web"\n' \
    "$RELAY" "$TOKEN" "$tcpmux" "$UP" >"$work/client.toml"
  local pid fifo="$work/stdin.$client.$mux.$rep"
  if [ "$client" = frpc ]; then
    "$FRP/frpc" -c "$work/client.toml" >/dev/null 2>&1 & pid=$!
  else
    mkfifo "$fifo"
    BURROW_CONFIG="$work/client.toml" BURROW_PROXY_ADDR=off BURROW_MODE=native BURROW_LOG=warn \
      "$BURROW" <"$fifo" >/dev/null 2>&1 & pid=$!
    exec 4>"$fifo"
  fi
  for _ in $(seq 200); do served "$VHOST" && break; sleep 0.05; done
  served "$VHOST" || { echo "bench: $client never served ($mux)" >&2; exit 1; }
  kill -USR1 "$relay"
  sleep "$outage"
  kill -USR2 "$relay"
  local t0 secs=null
  t0=$(date +%s%N)
  [ "$client" = burrow+reconnect ] && echo '{"cmd":"reconnect"}' >&4
  for _ in $(seq 1800); do
    if served "$VHOST"; then secs=$(python3 -c "print(round(($(date +%s%N) - $t0) / 1e9, 2))"); break; fi
    sleep 0.1
  done
  echo "{\"mux\":\"$mux\",\"client\":\"$client\",\"outage\":$outage,\"secs\":$secs}" >>"$results"
  echo "bench: $mux $client: back $secs s after a ${outage} s outage" >&2
  [ "$client" = frpc ] || exec 4>&-
  kill "$pid" "$relay" "$frps" 2>/dev/null || true
  wait "$pid" "$relay" "$frps" 2>/dev/null || true
}

for rep in $(seq "$REPS"); do
  for mux in mux nomux; do
    for client in frpc burrow burrow+reconnect; do
      run_case "$mux" "$client" "$rep"
    done
  done
done

# Idle wake-ups: one tunnel, tcp_mux on, a minute under strace.
BIND=$(free_port); VHOST=$(free_port)
printf 'bindAddr = "127.0.0.1"\nbindPort = %s\nvhostHTTPPort = %s\nsubDomainHost = "bench.test"\nauth.token = "%s"\nlog.to = "%s/frps.log"\n' \
  "$BIND" "$VHOST" "$TOKEN" "$work" >"$work/frps.toml"
"$FRP/frps" -c "$work/frps.toml" & pids+=($!)
wait_port "$BIND"
printf 'serverAddr = "127.0.0.1"\nserverPort = %s\nauth.token = "%s"\n\n[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = %s\nsubdomain = "web"\n' \
  "$BIND" "$TOKEN" "$UP" >"$work/idle.toml"
BURROW_CONFIG="$work/idle.toml" BURROW_PROXY_ADDR=off BURROW_MODE=native BURROW_LOG=warn "$BURROW" >/dev/null 2>&1 < <(sleep 100000) &
idle=$!; pids+=("$idle")
for _ in $(seq 200); do served "$VHOST" && break; sleep 0.05; done
echo "bench: counting burrow's idle wake-ups for 60 s ..." >&2
timeout -s INT 60 strace -f -qq -e trace=epoll_wait,epoll_pwait -o "$work/idle.strace" -p "$idle" 2>/dev/null || true
wakeups=$(grep -c 'epoll_p\?wait(' "$work/idle.strace" || true)

python3 - "$results" "$wakeups" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| transport | outage | frpc 0.65.0 | burrow | burrow + reconnect | burrow/frpc |")
print("|---|---|---|---|---|---|")
for mux, title in [("mux", "TLS + tcp_mux"), ("nomux", "TLS, tcp_mux off")]:
    def med(c):
        v = [r["secs"] for r in rows if r["mux"] == mux and r["client"] == c and r["secs"] is not None]
        return statistics.median(v) if v else None
    f, b, r = med("frpc"), med("burrow"), med("burrow+reconnect")
    outage = next((x["outage"] for x in rows if x["mux"] == mux), "")
    show = lambda v: "not back in 180 s" if v is None else f"{v:g} s"
    ratio = f"{b / f:.2f}" if b is not None and f else ""
    print(f"| {title} | {outage} s | {show(f)} | {show(b)} | {show(r)} | {ratio} |")
print(f"\nSeconds from the path's return to the first request served. burrow idle (one tunnel, tcp_mux on): {sys.argv[2]} wake-ups (epoll returns) a minute.")
PY
results_section recovery "$work/results.md"
