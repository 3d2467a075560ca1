//! Test harness shared by the integration tests (`mod common;` in each `tests/*.rs`); how to use
//! it is in tests/README.md.
//!
//! Everything here uses real parts, as DESIGN.md asks:
//! - [`Fixture`]: the set-up of an end-to-end test (cluster + schema + sink + pgcdc config) and
//!   the waits that compare the files with the table; every end-to-end suite starts here.
//! - [`PgCluster`]: a throwaway PostgreSQL cluster (initdb into a temp dir, `wal_level=logical`,
//!   free port, password roles for every auth method); never a system cluster.
//! - [`Pgcdc`]: the real `pgcdc` binary as a child process, with its output kept in files.
//! - [`PgcdcConfig`]: the one writer of pgcdc TOML configs.
//! - [`read_change_files`] / [`replay`] / [`table_state`]: read the CSV files pgcdc wrote and
//!   rebuild the table from them, to compare with what PostgreSQL holds.
//! - [`wait_until`]: the only way a test waits; no sleeps as synchronisation.
//!
//! Each test binary compiles this module separately and uses only part of it. The harness's own
//! tests live in tests/harness.rs alone, so they run once, not once per test binary.
#![allow(dead_code, unused_imports)]

pub mod below;
pub mod cluster;
pub mod config;
pub mod fixture;
pub mod process;
pub mod replay;
pub mod wait;

pub use below::BelowCheckpoint;
pub use cluster::{
    CLEAR_USER, MD5_USER, PgCluster, SCRAM_USER, SHOP_DB, SUPERUSER, StopMode, password_for,
    pg_error,
};
pub use config::{PgcdcConfig, add_settings, free_port, metrics_listen};
pub use fixture::{Fixture, FixtureBuilder};
pub use process::{PGCDC_BIN, Pgcdc, peak_rss_kib, pgcdc_output};
pub use replay::{
    BOOKKEEPING_DIR, ChangeRow, FileName, METADATA_COLUMNS, Row, TableState, change_files,
    describe_diff, diff_states, duplicate_keys, parse_change_file, parse_csv, parse_file_name,
    projection_state, read_change_files, read_text, replay, table_state, try_read_change_files,
};
pub use wait::{POLL_INTERVAL, Satisfied, wait_until};
pub mod http;
pub mod s3;
pub mod tls;
