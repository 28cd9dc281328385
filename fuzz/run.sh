#!/usr/bin/env bash
# Runs every fuzz target for a given time and reports executions per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, all targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's toolchain is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its sanitizer flags. The working corpus is
# fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target> (committed: real frames
# captured from frps 0.65.0 by fuzz/seeds/capture.py, real configs, API answers). A crash leaves
# its input in fuzz/artifacts/<target>/ and makes this script exit 1; turn each into a
# regression test in `cargo test` before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz/run.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
echo "building ${#targets[@]} fuzz targets (first build takes a few minutes)..." >&2
cargo fuzz build -O >&2
failed=0
printf '| target | seconds | executions | exec/s | corpus | result |\n|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    echo "fuzzing $t for ${secs}s..." >&2
    if cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -max_len=65536 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        failed=1
        tail -40 "$log" >&2
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    corpus=$(find "corpus/$t" -type f | wc -l)
    printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$secs" "$runs" "$rate" "$corpus" "$result"
    rm -f "$log"
done
exit $failed
