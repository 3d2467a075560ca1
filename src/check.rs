//! `pgcdc check`: validates the configuration, the server and the sink without streaming, and
//! prints each finding with what to do about it. Exit status 0 only when everything passes.

use std::fmt::Write as _;

use tokio::sync::watch;

use crate::config::{Config, SinkTarget, redacted_target};
use crate::sink::{LocalSink, S3Sink};
use crate::source::{Connection, slot};

/// One line of the report.
#[derive(Debug)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

impl Finding {
    fn pass(what: &str, detail: impl Into<String>) -> Finding {
        Finding {
            ok: true,
            what: what.to_owned(),
            detail: detail.into(),
        }
    }

    fn fail(what: &str, detail: impl std::fmt::Display) -> Finding {
        Finding {
            ok: false,
            what: what.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// Runs every check it can; a failed connection skips the server checks that need it.
pub async fn run(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let target = redacted_target(&config.source.connect);
    match Connection::connect(&config.source.connect).await {
        Err(e) => findings.push(Finding::fail("connect", e)),
        Ok(mut conn) => {
            let version = slot::server_version(&mut conn).await.unwrap_or_default();
            findings.push(Finding::pass(
                "connect",
                format!("{target} (replication), PostgreSQL {version}"),
            ));
            findings.push(match slot::check_wal_level(&mut conn).await {
                Ok(()) => Finding::pass("wal_level", "logical"),
                Err(e) => Finding::fail("wal_level", e),
            });
            let publication = &config.source.publication;
            findings.push(match slot::publication_tables(&mut conn, publication).await {
                Ok(tables) if tables.is_empty() => Finding::fail(
                    "publication",
                    format!("{publication:?} has no tables: add them with `ALTER PUBLICATION {publication} ADD TABLE ...;`"),
                ),
                Ok(tables) => Finding::pass(
                    "publication",
                    format!("{publication:?}: {}", tables.join(", ")),
                ),
                Err(e) => Finding::fail("publication", e),
            });
            let name = config.source.slot.as_str();
            findings.push(match slot::find_slot(&mut conn, name).await {
                Ok(None) => Finding::pass(
                    "slot",
                    format!(
                        "{name:?} does not exist yet: pgcdc run creates it and takes a snapshot"
                    ),
                ),
                Ok(Some(found)) if found.plugin != "pgoutput" => Finding::fail(
                    "slot",
                    format!(
                        "{name:?} uses the {} plugin; pgcdc needs pgoutput",
                        found.plugin
                    ),
                ),
                Ok(Some(found)) => {
                    let mut detail = format!("{name:?} exists (pgoutput");
                    if let Some(lsn) = found.confirmed_flush {
                        let _ = write!(detail, ", confirmed flush {lsn}");
                    }
                    match found.active_pid {
                        Some(pid) => {
                            let _ = write!(detail, ", in use by pid {pid})");
                        }
                        None => detail.push_str(", not in use)"),
                    }
                    Finding::pass("slot", detail)
                }
                Err(e) => Finding::fail("slot", e),
            });
            conn.terminate().await;
        }
    }
    findings.push(check_sink(config).await);
    findings
}

async fn check_sink(config: &Config) -> Finding {
    let slot = config.source.slot.as_str();
    match &config.sink.target {
        SinkTarget::Local(root) => match LocalSink::open(root, slot) {
            Ok(_) => Finding::pass("sink", format!("file://{} is writable", root.display())),
            Err(e) => Finding::fail("sink", e),
        },
        SinkTarget::S3(target) => {
            // Never signalled: a check does not retry, it reports.
            let (_tx, shutdown) = watch::channel(false);
            match S3Sink::connect(target, shutdown).await {
                Err(e) => Finding::fail("sink", e),
                Ok((sink, info)) => {
                    let resolved = format!(
                        "s3://{}/{} (region {}, endpoint {}, credentials from {})",
                        target.bucket,
                        target.prefix,
                        info.region,
                        info.endpoint,
                        info.credential_source
                    );
                    match sink.check_writable(slot).await {
                        Ok(()) => Finding::pass("sink", format!("{resolved} is writable")),
                        Err(e) => Finding::fail("sink", format!("{resolved}: {e}")),
                    }
                }
            }
        }
    }
}

/// The report as text, one finding per line.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{:<4}  {:<12} {}",
            if f.ok { "ok" } else { "FAIL" },
            f.what,
            f.detail
        );
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        out.push_str("all checks passed\n");
    } else {
        let _ = writeln!(out, "{failed} check(s) failed");
    }
    out
}
