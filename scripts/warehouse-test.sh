#!/usr/bin/env bash
# The warehouse half of `make test`: a real pgcdc run (scripts/fixture.sh: snapshot, workload, a
# truncate, a reload, a key change, an unchanged-TOAST update, the type zoo) produces change
# files, then pytest checks the
# Snowflake scripts (sqlglot parse, fakesnow load) and builds and tests the dbt project on
# DuckDB against those files.
#
#   scripts/warehouse-test.sh            (after `cargo test` built the debug binary)
#   PGCDC_FIXTURE=<dir> scripts/warehouse-test.sh   reuse files from an earlier run
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/pgcdc/target}
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}

if [[ -z "${PGCDC_FIXTURE:-}" ]]; then
    fixture=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-fixture-XXXXXX")
    trap 'rm -rf "$fixture"' EXIT
    echo "==> Producing change files with a real pgcdc run into $fixture"
    if ! PGCDC_BIN="${PGCDC_BIN:-$target_dir/debug/pgcdc}" \
        bash "$repo/scripts/fixture.sh" "$fixture" >"$fixture/fixture.log" 2>&1; then
        tail -n 60 "$fixture/fixture.log" >&2
        echo "warehouse-test: the pgcdc run that produces the fixture failed" >&2
        exit 1
    fi
    grep -E 'fixture: ' "$fixture/fixture.log" | sed 's/^ */    /' || true
    export PGCDC_FIXTURE=$fixture
fi

cd "$repo"
exec "$venv/bin/pytest" -p no:cacheprovider -q tests/warehouse tests/observability
