#!/usr/bin/env bash
# Release binaries for the five platforms the app ships on, in the layout burrow's frpc lookup and
# the Electron module use: dist/bin/<os>-<arch>/burrow[.exe] and frpc[.exe], plus dist/SHA256SUMS.
#
#   linux-amd64    built and linked here
#   linux-arm64    linked by Debian's gcc-aarch64-linux-gnu
#   windows-amd64  linked by Debian's mingw-w64
#   darwin-amd64, darwin-arm64
#                  compiled here (all of burrow's Rust, and ring's C through zig from PyPI), not
#                  linked: that needs Apple's SDK. On a Mac:
#                    cargo build --release --target aarch64-apple-darwin
#                    cargo build --release --target x86_64-apple-darwin
#                    lipo -create -output burrow target/{aarch64,x86_64}-apple-darwin/release/burrow
#                  (a universal binary; or ship each in its dist/bin/darwin-<arch>/).
# frpc for every platform is frp's Go source built by resources/fetch-frpc.sh, its sha256 checked
# against resources/frpc-manifest.json.
#
# Usage: resources/dist.sh     (Debian: gcc-aarch64-linux-gnu mingw-w64; pip: ziglang)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'dist: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
command -v aarch64-linux-gnu-gcc >/dev/null || die "apt-get install gcc-aarch64-linux-gnu (the linux-arm64 linker)"
command -v x86_64-w64-mingw32-gcc >/dev/null || die "apt-get install mingw-w64 (the windows-amd64 linker)"
python3 -c 'import ziglang' 2>/dev/null || die "pip install ziglang (the C compiler ring needs for darwin)"
for t in aarch64-unknown-linux-gnu x86_64-pc-windows-gnu x86_64-apple-darwin aarch64-apple-darwin; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

# zig as the darwin C compiler: one wrapper per target, for cc-rs, whose clang-style
# `--target=…-apple-macosx` zig does not parse (the wrapper gives zig's own -target instead).
zigdir=$(mktemp -d)
trap 'rm -rf "$zigdir"' EXIT
for arch in x86_64 aarch64; do
  cat >"$zigdir/cc-$arch-macos" <<SH
#!/bin/sh
for a in "\$@"; do shift; case "\$a" in --target=*) ;; *) set -- "\$@" "\$a" ;; esac; done
exec python3 -m ziglang cc -target $arch-macos "\$@"
SH
  chmod +x "$zigdir/cc-$arch-macos"
done
printf '#!/bin/sh\nexec python3 -m ziglang ar "$@"\n' >"$zigdir/ar"
chmod +x "$zigdir/ar"

rm -rf dist && mkdir -p dist/bin
# platform  rust target  executable
while read -r plat target exe; do
  say "[$plat] burrow ($target) ..."
  case "$plat" in
    darwin-*)
      arch=${target%%-*}
      env "CC_${target//-/_}=$zigdir/cc-$arch-macos" "AR_${target//-/_}=$zigdir/ar" \
        cargo build --release --quiet --lib --target "$target"
      say "[$plat] compiled (library and every dependency); linking needs Apple's SDK: build on a Mac (see the top of this script)"
      ;;
    *)
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        cargo build --release --quiet --target "$target"
      mkdir -p "dist/bin/$plat"
      install -m 0755 "target/$target/release/$exe" "dist/bin/$plat/$exe"
      ;;
  esac
done <<'EOF'
linux-amd64 x86_64-unknown-linux-gnu burrow
linux-arm64 aarch64-unknown-linux-gnu burrow
windows-amd64 x86_64-pc-windows-gnu burrow.exe
darwin-amd64 x86_64-apple-darwin burrow
darwin-arm64 aarch64-apple-darwin burrow
EOF

say "frpc for the five platforms (resources/fetch-frpc.sh) ..."
while read -r plat path; do
  mkdir -p "dist/bin/$plat"
  install -m 0755 "$path" "dist/bin/$plat/"
done < <(bash resources/fetch-frpc.sh)

(cd dist && find bin -type f | sort | xargs sha256sum >SHA256SUMS)
printf '%-32s %10s  %s\n' file bytes sha256
while read -r sum file; do
  printf '%-32s %10s  %s\n' "$file" "$(stat -c %s "dist/$file")" "$sum"
done <dist/SHA256SUMS
