#!/usr/bin/env bash
# Lays out the bundled frpc for packaging and for the tests: resources/bin/<os>-<arch>/frpc[.exe],
# one per platform of resources/frpc-manifest.json, built from frp's Go source at the manifest's
# version by resources/build-frp.sh --platform (cached in ~/.cache/burrow/frp-X.Y.Z-<platform>/).
# The module hash the build verified must equal the manifest's module_hash. Binaries are not
# committed; run this before packaging the Electron app.
#
# Go builds are reproducible: built with the manifest's Go version, each binary's sha256 must equal
# the one the manifest records for its platform (another Go version makes other bytes: then the
# hash is reported, not enforced).
#
# Usage: resources/fetch-frpc.sh [PLATFORM ...]     # default: every platform in the manifest
#        e.g. resources/fetch-frpc.sh linux-amd64 darwin-arm64
#        prints "PLATFORM PATH" per platform on stdout
#        resources/fetch-frpc.sh --record [PLATFORM ...]   writes this machine's Go version and
#        the binaries' sha256 into the manifest (after a deliberate change of version or Go)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/frpc-manifest.json"
say() { printf 'fetch-frpc: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed to read $manifest"
field() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); v=m
for k in sys.argv[2:]: v=v.get(k) if isinstance(v,dict) else None
print("" if v is None else v)' "$manifest" "$@"; }

record=0
if [ "${1:-}" = --record ]; then record=1; shift; fi
version="$(field frp_version)"; want_sum="$(field module_hash)"; want_go="$(field go)"
have_go="$(go env GOVERSION)"
[ -n "$version" ] && [ -n "$want_sum" ] || die "$manifest needs frp_version and module_hash"
platforms=("$@")
if [ ${#platforms[@]} -eq 0 ]; then
  mapfile -t platforms < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["platforms"]))' "$manifest")
fi
for plat in "${platforms[@]}"; do
  exe="$(field platforms "$plat" exe)"
  [ -n "$exe" ] || die "$plat is not a platform of $manifest; it has: $(field platforms | tr -d "{}'" )"
  [ "$(field platforms "$plat" goos)-$(field platforms "$plat" goarch)" = "$plat" ] \
    || die "$manifest: $plat's goos/goarch do not name $plat"
  built="$(bash "$here/build-frp.sh" --platform "$plat" "$version" | awk '{print $2}')"
  got_sum="$(cat "$built/.module-sum")"
  [ "$got_sum" = "$want_sum" ] \
    || die "frp $version was built from module hash $got_sum, but $manifest pins $want_sum; make the two agree"
  got="$(sha256sum "$built/$exe" | cut -d' ' -f1)"
  want="$(field platforms "$plat" sha256)"
  if [ "$record" = 1 ]; then
    python3 - "$manifest" "$plat" "$got" "$have_go" <<'PY'
import json, sys
path, plat, sha, go = sys.argv[1:]
m = json.load(open(path))
m["go"] = go
m["platforms"][plat]["sha256"] = sha
open(path, "w").write(json.dumps(m, indent=2) + "\n")
PY
    say "$plat: recorded sha256 $got (built with $have_go)"
  elif [ "$have_go" = "$want_go" ]; then
    [ "$got" = "$want" ] || die "$plat: frpc built with $have_go has sha256 $got, but $manifest records $want for that Go; the build is not reproducible here — check the Go toolchain, or run --record after a deliberate change"
  else
    say "$plat: built with $have_go, the manifest's hashes are for $want_go: sha256 $got not compared"
  fi
  out="$here/bin/$plat"
  mkdir -p "$out"
  install -m 0755 "$built/$exe" "$out/$exe"
  say "$plat: frpc $version → $out/$exe (sha256 $got)"
  echo "$plat $out/$exe"
done
