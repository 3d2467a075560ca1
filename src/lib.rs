//! pgcdc: streams PostgreSQL row changes (logical replication, pgoutput) into time-windowed CSV
//! files, acknowledging a change to the server only once the file holding it is durable.
//!
//! Data flows one way: `source → pgoutput → changes → batch → sink → checkpoint`; `run` wires the
//! stages together and `main.rs` only parses the command line and maps errors to exit codes.

pub mod backoff;
pub mod batch;
pub mod changes;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod conninfo;
pub mod control;
pub mod encode;
pub mod layout;
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
pub mod slot_forecast;
pub mod snapshot;
pub mod source;
pub mod streamed;
pub mod tls;
pub mod wal_hold;

/// Which module may import which: the layering the module docs state, checked on the source so
/// that a convenient import does not quietly undo it.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// The Rust files of `module` (a file `src/<module>.rs` or a folder `src/<module>/`).
    fn files(module: &str) -> Vec<PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            return vec![file];
        }
        let mut found = Vec::new();
        let mut pending = vec![src.join(module)];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("module {module}: reading {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    found.push(path);
                }
            }
        }
        assert!(!found.is_empty(), "module {module} has no files");
        found
    }

    /// Fails naming the file and line where `module` mentions one of `forbidden` in code (doc
    /// comments may name anything).
    fn assert_never_uses(module: &str, forbidden: &[&str]) {
        for file in files(module) {
            let text = std::fs::read_to_string(&file).expect("source file");
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for f in forbidden {
                    assert!(
                        !code.contains(f),
                        "{}:{}: {module} must not use {f}: {line}",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }

    #[test]
    fn configuration_is_the_bottom_layer() {
        let above = [
            "crate::source",
            "crate::run",
            "crate::sink",
            "crate::snapshot",
        ];
        assert_never_uses("config", &above);
        // The environment comes in through `Config::parse`'s argument, read at the edge.
        assert_never_uses("config", &["std::env", "env::var"]);
        assert_never_uses("conninfo", &["crate::", "tokio::", "rustls"]);
        assert_never_uses("tls", &["crate::config", "crate::source", "tokio::net"]);
        assert_never_uses("publication", &["crate::", "tokio"]);
    }

    #[test]
    fn the_pure_stages_do_no_io() {
        let io = [
            "tokio",
            "aws_sdk",
            "aws_config",
            "crate::sink",
            "crate::source",
            "crate::config",
        ];
        for module in [
            "pgoutput",
            "changes",
            "batch",
            "encode",
            "layout",
            "lsn",
            "control",
            "slot_forecast",
        ] {
            assert_never_uses(module, &io);
        }
        // What holds the WAL is ranked and said without a server: only `gather` reads one.
        for module in ["wal_hold/rank", "wal_hold/text"] {
            assert_never_uses(module, &io);
        }
        assert_never_uses(
            "run/ack",
            &["tokio", "crate::sink", "crate::checkpoint", "metrics"],
        );
    }

    #[test]
    fn nothing_below_run_imports_it() {
        for module in [
            "batch",
            "changes",
            "check",
            "checkpoint",
            "config",
            "encode",
            "layout",
            "pgoutput",
            "schema_file",
            "sink",
            "snapshot",
            "source",
            "streamed",
            "slot_admin",
            "wal_hold",
        ] {
            assert_never_uses(module, &["crate::run"]);
        }
    }

    /// Every connection that reads row values prints them with pgcdc's session settings: the
    /// replication one (`source::conn`) and the SQL ones, all opened by `source::sql_connect`.
    /// Nothing else may open a connection of its own.
    #[test]
    fn one_place_opens_sql_connections() {
        let opening = [
            "tokio_postgres::connect(",
            ".connect(source",
            "connect.connect(",
        ];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut pending = vec![src.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(&src).expect("under src");
                if relative == Path::new("source/mod.rs") || relative == Path::new("lib.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source file");
                for f in opening {
                    assert!(
                        !text.contains(f),
                        "{} opens a connection itself ({f}); use source::sql_connect",
                        relative.display()
                    );
                }
            }
        }
    }
}
