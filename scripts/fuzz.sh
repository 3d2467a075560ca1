#!/usr/bin/env bash
# Runs pgcdc's cargo-fuzz targets for a bounded time each and prints one line per target.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; `make fuzz`)
#
# cargo-fuzz is installed from crates.io into ~/.cache/pgcdc/cargo-fuzz when missing. libFuzzer
# needs nightly-only compiler flags; the machine has one stable toolchain, so RUSTC_BOOTSTRAP=1
# lets it accept them. New inputs go to ~/.cache/pgcdc/fuzz/corpus/<target> (the committed corpus
# under fuzz/corpus/ is only read); a crash leaves its input in ~/.cache/pgcdc/fuzz/artifacts and
# fails the run.
set -euo pipefail

seconds=${1:-60}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PGCDC_CACHE:-$HOME/.cache/pgcdc}
tools=$cache/cargo-fuzz
export CARGO_TARGET_DIR=$cache/fuzz-target
export RUSTC_BOOTSTRAP=1
export PATH=$tools/bin:$PATH

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> Installing cargo-fuzz into $tools"
    cargo install --locked --root "$tools" cargo-fuzz@0.13.1 >"$cache/cargo-fuzz-install.log" 2>&1 || {
        tail -n 20 "$cache/cargo-fuzz-install.log" >&2
        echo "fuzz: installing cargo-fuzz failed (log: $cache/cargo-fuzz-install.log)" >&2
        exit 1
    }
fi

cd "$repo/fuzz"
status=0
summary=()
for target in pgoutput_decoder replication_frame config; do
    work=$cache/fuzz/corpus/$target
    artifacts=$cache/fuzz/artifacts/$target
    mkdir -p "$work" "$artifacts"
    seeds=()
    [[ -d corpus/$target ]] && seeds=("corpus/$target")
    [[ $target == replication_frame && -d corpus/pgoutput_decoder ]] && seeds+=("corpus/pgoutput_decoder")
    echo "==> cargo fuzz run $target for ${seconds}s"
    log=$cache/fuzz/$target.log
    if cargo fuzz run --release "$target" "$work" "${seeds[@]}" -- \
        -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+')
        summary+=("$target: ${runs:-?} runs in ${seconds}s, coverage ${cov:-?} edges, no crash")
    else
        status=1
        tail -n 30 "$log" >&2
        summary+=("$target: FAILED (crash input in $artifacts, log $log)")
    fi
done
echo
echo "fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $status
