#!/usr/bin/env bash
# Runs the replication integration tests against each PostgreSQL major version given (default:
# 13 to 18) and prints a table of version × result. `make test` runs it for 17 (the default
# suite already ran on Debian's 15); `make test-matrix` for all six.
#
#   scripts/test-matrix.sh            # 13 14 15 16 17 18
#   scripts/test-matrix.sh 17         # one version
#
# A version comes from Debian's packages when installed (/usr/lib/postgresql/<major>/bin), else
# from the npm build that scripts/fetch-postgres.sh caches. The harness is told which major to
# expect (PGCDC_PG_EXPECT_MAJOR) and fails if the server it started is another. Each version's
# full cargo output is kept in $PGCDC_MATRIX_LOGS (default: a temp dir, printed at the end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

majors=("$@")
[[ ${#majors[@]} -gt 0 ]] || majors=(13 14 15 16 17 18)
suites=(versions e2e_local e2e_semantics e2e_partitions e2e_publication e2e_snapshot e2e_s3 slot_commands slot_safety hazards copy_attempts partitioned_copy)
logs=${PGCDC_MATRIX_LOGS:-$(mktemp -d /tmp/pgcdc-matrix.XXXXXX)}
mkdir -p "$logs"
locked=$([[ -f Cargo.lock ]] && echo --locked || true)

say() { printf 'test-matrix: %s\n' "$*" >&2; }

source scripts/lib/cluster.sh

targets=()
for suite in "${suites[@]}"; do targets+=(--test "$suite"); done
# Built once, before any version runs, so the table's times are test times.
cargo test $locked --no-run "${targets[@]}" >/dev/null 2>&1 || cargo test $locked --no-run "${targets[@]}"

declare -A result passed failed seconds source server
status=0
for major in "${majors[@]}"; do
    bindir=$(pg_bindir_for_major "$major")
    source[$major]=$([[ $bindir == /usr/lib/postgresql/* ]] && echo debian || echo npm)
    server[$major]=$(pg_run "$bindir" postgres --version | awk '{print $3}')
    log="$logs/pg$major.log"
    say "PostgreSQL $major ($bindir): ${suites[*]} -> $log"
    start=$(date +%s)
    if PGCDC_PG_BINDIR="$bindir" PGCDC_PG_EXPECT_MAJOR="$major" \
        cargo test $locked --no-fail-fast "${targets[@]}" >"$log" 2>&1; then
        result[$major]=pass
    else
        result[$major]=FAIL
        status=1
    fi
    seconds[$major]=$(($(date +%s) - start))
    # Integration tests only: the harness's own unit tests live in tests/harness.rs, which is
    # not one of the suites, so every test counted here ran against the server.
    passed[$major]=$(grep -cE '^test [^ ]+ \.\.\. ok$' "$log" || true)
    failed[$major]=$(grep -cE '^test [^ ]+ \.\.\. FAILED$' "$log" || true)
    if [[ ${result[$major]} == FAIL ]]; then
        grep -E '^test .* FAILED$|^error: test failed' "$log" | sed 's/^/    /' >&2 || true
    fi
done

printf '\n| PostgreSQL | server  | build  | result | passed | failed | seconds |\n'
printf '|------------|---------|--------|--------|--------|--------|---------|\n'
for major in "${majors[@]}"; do
    printf '| %-10s | %-7s | %-6s | %-6s | %6s | %6s | %7s |\n' "$major" "${server[$major]}" \
        "${source[$major]}" "${result[$major]}" "${passed[$major]}" "${failed[$major]}" \
        "${seconds[$major]}"
done
printf '\nSuites: %s. Logs: %s\n' "${suites[*]}" "$logs"
exit $status
