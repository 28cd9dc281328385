# Shared by the bench scripts (sourced): a work directory and background processes that are all
# cleaned up on exit, and a free loopback port.
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT: returns once something listens on the loopback port (10 s at most).
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# results_section NAME FILE: replaces NAME's section of bench/RESULTS.md (between its
# `<!-- bench:NAME begin/end -->` markers) with FILE, stamped with the commit and the machine;
# a section not there yet is appended.
results_section() {
  local name=$1 file=$2 out=bench/RESULTS.md rev stamp
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- src proto Cargo.toml Cargo.lock 2>/dev/null || rev="$rev+changes"
  stamp="Measured at $rev on $(date -u +%Y-%m-%d), $(uname -sm), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)."
  python3 - "$out" "$name" "$file" "$stamp" <<'PY'
import sys
out, name, file, stamp = sys.argv[1:]
begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
body = f"{begin}\n_{stamp}_\n\n{open(file).read().strip()}\n{end}"
try:
    text = open(out).read()
except FileNotFoundError:
    text = "# Benchmark results\n"
if begin in text and end in text:
    text = text[: text.index(begin)] + body + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + f"\n\n## {name}\n\n{body}\n"
open(out, "w").write(text)
PY
  echo "bench: wrote the $name section of $out" >&2
}

# upstream_1k PORT...: an nginx answering 1 KiB from memory on each port (fast enough not to be
# the bottleneck a bench measures), stopped with the other background processes.
upstream_1k() {
  local body servers="" p
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  for p in "$@"; do
    servers+="  server { listen 127.0.0.1:$p; location / { default_type text/plain; return 200 \"$body\"; } }"$'\n'
  done
  cat >"$work/upstream.conf" <<NGINX
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
$servers}
NGINX
  nginx -c "$work/upstream.conf" -g 'daemon off;' & pids+=($!)
}
