#!/usr/bin/env bash
# The Windows smoke suite: builds burrow.exe (x86_64-pc-windows-gnu, linked by Debian's mingw-w64)
# and the bundled frpc.exe (resources/fetch-frpc.sh), then runs tests/windows.rs under Debian's
# Wine against a Linux frps: version and check, a native tunnel that serves and stops cleanly, frpc
# mode, and frpc.exe gone within 2 s of burrow.exe being killed hard (the job object).
#
# Usage: resources/windows-smoke.sh      (needs wine64 and mingw-w64: resources/test.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'windows-smoke: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[ -x /usr/lib/wine/wine64 ] || die "Wine is missing: apt-get install wine64"
command -v x86_64-w64-mingw32-gcc >/dev/null || die "mingw-w64 is missing: apt-get install mingw-w64"
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu
say "building burrow.exe (release, x86_64-pc-windows-gnu) ..."
cargo build --release --quiet --target x86_64-pc-windows-gnu
say "the bundled frpc.exe ..."
bash resources/fetch-frpc.sh windows-amd64 >/dev/null
say "running tests/windows.rs under Wine ..."
cargo test --test integration windows_ -- --ignored
