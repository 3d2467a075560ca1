#!/usr/bin/env bash
# Prints the directory of the PostgreSQL server binaries, by the one rule in scripts/lib/cluster.sh
# (pg_bindir): $PGCDC_PG_BINDIR, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin. The Rust test harness (tests/common/cluster.rs) runs this, so shell
# and Rust can never disagree about which server a test starts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
pg_bindir
