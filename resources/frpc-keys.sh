#!/usr/bin/env bash
# Writes resources/frpc-keys.txt: every configuration key the bundled frpc accepts, listed by
# resources/frpc-keys/main.go, which walks frp's own configuration types (pkg/config/v1) inside a
# copy of frp's module source at the bundled tag. burrow reads the list (src/config/frpc_keys.rs)
# to tell a key only frpc serves (run it under frpc) from one frpc does not know (refuse it).
#
# Usage: resources/frpc-keys.sh          rewrite the list (when the bundled frpc changes)
#        resources/frpc-keys.sh --check  fail if the list is not what the bundled frpc accepts
# The output is cached by frp version and generator hash; a second run takes a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf 'frpc-keys: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed; install Go 1.22 or newer and run again"

version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["frp_version"])' "$here/frpc-manifest.json")
gen_hash=$(sha256sum "$here/frpc-keys/main.go" | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/burrow/frpc-keys-$version-$gen_hash.txt"
if [ ! -s "$cache" ]; then
  say "listing frpc $version's configuration keys (go run; about 20 s) ..."
  src=$(bash "$here/build-frp.sh" --source "$version")
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src" "$work/frp" && chmod -R u+w "$work/frp"
  mkdir -p "$work/frp/cmd/burrow-keys" "$(dirname "$cache")"
  cp "$here/frpc-keys/main.go" "$work/frp/cmd/burrow-keys/"
  (cd "$work/frp" && go run ./cmd/burrow-keys) >"$cache.$$"
  mv "$cache.$$" "$cache"
fi
if [ "${1:-}" = --check ]; then
  diff -u "$here/frpc-keys.txt" "$cache" >&2 \
    || die "resources/frpc-keys.txt is not what frpc $version accepts (diff above); run resources/frpc-keys.sh and commit the result"
  say "resources/frpc-keys.txt matches frpc $version"
else
  cp "$cache" "$here/frpc-keys.txt"
  say "wrote resources/frpc-keys.txt (frpc $version, $(grep -vc '^[[#]' "$cache") keys)"
fi
