//! Test harness shared by the integration tests (`mod common;` in each `tests/*.rs`).
//!
//! Everything here uses real parts, as DESIGN.md asks:
//! - [`PgCluster`]: a throwaway PostgreSQL cluster (initdb into a temp dir, `wal_level=logical`,
//!   free port, password roles for every auth method); never a system cluster.
//! - [`Pgcdc`]: the real `pgcdc` binary as a child process, with its output kept in files.
//! - [`write_config`]: the pgcdc TOML config for a test.
//! - [`read_change_files`] / [`replay`] / [`table_state`]: read the CSV files pgcdc wrote and
//!   rebuild the table from them, to compare with what PostgreSQL holds.
//! - [`wait_until`]: the only way a test waits; no sleeps as synchronisation.
//!
//! Each test binary compiles this module separately and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod config;
pub mod process;
pub mod replay;
pub mod wait;

pub use cluster::{
    CLEAR_USER, MD5_USER, PgCluster, SCRAM_USER, SHOP_DB, SUPERUSER, StopMode, password_for,
    pg_error,
};
pub use config::{add_settings, free_port, metrics_listen, write_config};
pub use process::{PGCDC_BIN, Pgcdc, pgcdc_output};
pub use replay::{
    BOOKKEEPING_DIR, ChangeRow, FileName, METADATA_COLUMNS, Row, TableState, change_files,
    describe_diff, diff_states, duplicate_keys, parse_change_file, parse_csv, parse_file_name,
    projection_state, read_change_files, read_text, replay, table_state, try_read_change_files,
    wait_projection_matches, wait_replay_matches,
};
pub use wait::{POLL_INTERVAL, Satisfied, wait_until};
pub mod http;
pub mod s3;
pub mod tls;
