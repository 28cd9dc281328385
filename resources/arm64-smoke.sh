#!/usr/bin/env bash
# linux-arm64 under emulation: builds burrow for aarch64-unknown-linux-gnu (linked by Debian's
# gcc-aarch64-linux-gnu) and runs tests/emulated.rs under qemu-user against an x86_64 frps:
# `burrow version` and a native tunnel serving a request.
#
# Usage: resources/arm64-smoke.sh   (needs gcc-aarch64-linux-gnu and qemu-user-static: resources/test.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'arm64-smoke: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[ -x /usr/bin/qemu-aarch64-static ] || die "qemu-user is missing: apt-get install qemu-user-static"
command -v aarch64-linux-gnu-gcc >/dev/null || die "the arm64 cross compiler is missing: apt-get install gcc-aarch64-linux-gnu"
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
say "building burrow (release, aarch64-unknown-linux-gnu) ..."
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
  cargo build --release --quiet --target aarch64-unknown-linux-gnu
say "running tests/emulated.rs under qemu-user ..."
cargo test --test integration arm64_ -- --ignored
