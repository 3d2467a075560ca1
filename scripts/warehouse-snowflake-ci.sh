#!/usr/bin/env bash
# The CI lane for a real Snowflake account (not run here: it needs an account). Slim CI: build
# and test only the dbt models a change touched and what depends on them (state:modified+),
# reading everything else from production (--defer to the manifest of the last production run),
# in a schema of its own that is dropped afterwards.
#
#   SNOWFLAKE_ACCOUNT=... SNOWFLAKE_USER=... SNOWFLAKE_PRIVATE_KEY_PATH=... \
#   PGCDC_PROD_MANIFEST_DIR=path/to/prod/target  scripts/warehouse-snowflake-ci.sh
#
# Gated on secrets: without SNOWFLAKE_ACCOUNT it prints why and exits 0, so a CI job can always
# call it (e.g. a GitHub Actions job with the account's secrets in its environment, and the
# production run's target/manifest.json downloaded as an artifact into PGCDC_PROD_MANIFEST_DIR).
# Without a production manifest (the first run) it builds everything.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}

if [[ -z "${SNOWFLAKE_ACCOUNT:-}" || -z "${SNOWFLAKE_USER:-}" ]]; then
    echo "warehouse-snowflake-ci: SNOWFLAKE_ACCOUNT / SNOWFLAKE_USER not set: no Snowflake lane here (skipped)"
    exit 0
fi

# A schema per CI run, so parallel runs and production never meet.
export SNOWFLAKE_SCHEMA=${SNOWFLAKE_SCHEMA:-CI_${GITHUB_RUN_ID:-$(date +%s)}}
dbt() { (cd "$repo" && "$venv/bin/dbt" "$@" --project-dir dbt --profiles-dir dbt --target snowflake); }
cleanup() {
    dbt run-operation pgcdc_drop_schema --args "{schema: $SNOWFLAKE_SCHEMA}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

dbt debug
if [[ -n "${PGCDC_PROD_MANIFEST_DIR:-}" && -f "$PGCDC_PROD_MANIFEST_DIR/manifest.json" ]]; then
    dbt build --select state:modified+ --defer --state "$PGCDC_PROD_MANIFEST_DIR" --fail-fast
else
    echo "warehouse-snowflake-ci: no production manifest; building everything"
    dbt build --fail-fast
fi
