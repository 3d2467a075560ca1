//! pgcdc: streams PostgreSQL row changes (logical replication, pgoutput) into time-windowed CSV
//! files, acknowledging a change to the server only once the file holding it is durable.
//!
//! Data flows one way: `source → pgoutput → changes → batch → sink → checkpoint`; `run` wires the
//! stages together and `main.rs` only parses the command line and maps errors to exit codes.

pub mod added_tables;
pub mod backoff;
pub mod batch;
pub mod changes;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod lsn;
pub mod metrics;
pub mod monitor;
pub mod pg_time;
pub mod pgoutput;
pub mod publication;
pub mod run;
pub mod schema_file;
pub mod sink;
pub mod slot_admin;
pub mod snapshot;
pub mod source;
pub mod streamed;
