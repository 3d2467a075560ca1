#!/usr/bin/env bash
# Runs `make PHASE` for each phase given, in order, stopping at the first that fails, and prints
# how long each took: where the time of `make test` and `make demo` goes, on a cold machine as on
# a warm one. The last line counts the phases (`phases: N passed, N failed`).
#
#   bash scripts/phases.sh deps lint cargo-test matrix-17 warehouse-test
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

names=()
seconds=()
results=()
status=0
total_start=$(date +%s)
for phase in "$@"; do
    start=$(date +%s)
    make --no-print-directory "$phase"
    code=$?
    names+=("$phase")
    seconds+=($(($(date +%s) - start)))
    if ((code == 0)); then
        results+=(ok)
    else
        results+=(FAILED)
        status=$code
        break
    fi
done

printf '\n%-16s %8s  %s\n' phase seconds result
for i in "${!names[@]}"; do
    printf '%-16s %8s  %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
done
printf '%-16s %8s\n' total $(($(date +%s) - total_start))
passed=0
for r in "${results[@]}"; do [[ $r == ok ]] && passed=$((passed + 1)); done
printf 'phases: %d passed, %d failed\n' "$passed" $((${#results[@]} - passed))
exit $status
