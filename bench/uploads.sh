#!/usr/bin/env bash
# Memory under stalled uploads: N public connections (default 200) each push up to 8 MiB through
# a tcp tunnel (TLS + tcp_mux, frps 0.65.0) into an app server that accepts and never reads. frps
# forwards each upload into the client's yamux stream until the stream's window is spent, so the
# client's peak RSS shows how much of that it buffers. burrow and frpc 0.65.0 side by side, one
# run; a markdown table on stdout, also written to bench/RESULTS.md.
#
# Usage: bench/uploads.sh [connections (default 200)]; BURROW=path measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
if [ -z "${BURROW:-}" ]; then
  echo "bench: building burrow (release) ..." >&2
  cargo build --release --quiet --bin burrow
  BURROW="$PWD/target/release/burrow"
fi
FRP="$(bash resources/fetch-frp.sh)"
source bench/lib.sh
exec 3>&1 > >(tee "$work/results.md" >&3)
tee_pid=$!
TOKEN="bench-$(date +%s)"
hwm_mib() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# The app server: accepts, holds, never reads.
SINK=$(free_port)
python3 - "$SINK" <<'PY' & pids+=($!)
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY

# upload PORT: N connections at once, each writing up to 8 MiB until it stalls for 2 s; prints the
# MiB that left the public side in total.
upload() {
  python3 - "$1" "$N" <<'PY'
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
chunk = b"u" * 65536
async def one():
    _, w = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        while sent < 8 << 20:
            w.write(chunk)
            await asyncio.wait_for(w.drain(), 2)
            sent += len(chunk)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    return sent, w
async def main():
    res = await asyncio.gather(*(one() for _ in range(n)))
    print(round(sum(s for s, _ in res) / 1048576))
asyncio.run(main())
PY
}

echo "| client | peak RSS (VmHWM) | idle RSS before | MiB sent by $N uploads |"
echo "|---|---|---|---|"
for client in burrow frpc; do
  BIND=$(free_port); REMOTE=$(free_port)
  cat >"$work/frps.toml" <<TOML
bindAddr = "127.0.0.1"
bindPort = $BIND
auth.token = "$TOKEN"
log.to = "$work/frps.log"
TOML
  "$FRP/frps" -c "$work/frps.toml" & frps=$!
  wait_port "$BIND"
  cat >"$work/client.toml" <<TOML
serverAddr = "127.0.0.1"
serverPort = $BIND
auth.token = "$TOKEN"
transport.tls.enable = true

[[proxies]]
name = "sink"
type = "tcp"
localPort = $SINK
remotePort = $REMOTE
TOML
  if [ "$client" = burrow ]; then
    BURROW_CONFIG="$work/client.toml" BURROW_PROXY_ADDR=off BURROW_MODE=native BURROW_LOG=warn \
      "$BURROW" >/dev/null 2>&1 < <(sleep 100000) & pid=$!
  else
    "$FRP/frpc" -c "$work/client.toml" >/dev/null 2>&1 & pid=$!
  fi
  pids+=("$pid")
  wait_port "$REMOTE" || { echo "bench: $client's tunnel did not come up" >&2; exit 1; }
  sleep 1
  idle=$(hwm_mib "$pid")
  echo "bench: $client: $N uploads ..." >&2
  sent=$(upload "$REMOTE")
  peak=$(hwm_mib "$pid")
  echo "| $client | $peak MiB | $idle MiB | $sent |"
  eval "peak_$client=$peak"
  kill "$pid" "$frps"; wait "$pid" "$frps" 2>/dev/null || true
done
echo
echo "Peak RSS burrow/frpc: $(python3 -c "print(f'{$peak_burrow / $peak_frpc:.2f}')"). burrow's bound: 4 streams × 6 MiB + the rest × 256 KiB of yamux buffers (\`src/transport/mux.rs\`)."
exec >&3
# tee ends once it has written all it read; give it a moment.
for _ in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
results_section uploads "$work/results.md"
