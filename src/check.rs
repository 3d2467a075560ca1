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
    match Connection::connect(&config.source).await {
        Err(e) => findings.push(Finding::fail("connect", e)),
        Ok(mut conn) => {
            let version = slot::server_version(&mut conn).await.unwrap_or_default();
            findings.push(Finding::pass(
                "connect",
                format!(
                    "{target} (replication, sslmode={}), PostgreSQL {version}",
                    config.source.tls.mode()
                ),
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
            findings.push(capacity(&mut conn).await);
            if config.source.failover {
                findings.push(failover(&mut conn).await);
            }
            findings.push(role(&mut conn).await);
            findings.extend(tables(&mut conn, publication).await);
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

/// `source.failover`: the server must have failover slots, and should hold pgcdc back to what
/// its standbys have received, or a promoted standby may lack changes pgcdc already wrote.
async fn failover(conn: &mut Connection) -> Finding {
    match slot::server_version_num(conn).await {
        Err(e) => return Finding::fail("failover", e),
        Ok(version) if version < slot::FAILOVER_SINCE => {
            return Finding::fail(
                "failover",
                format!(
                    "source.failover needs PostgreSQL 17 or later, and the server is {version}: set failover = false or upgrade"
                ),
            );
        }
        Ok(_) => {}
    }
    match conn.simple_query("SHOW synchronized_standby_slots").await {
        Err(e) => Finding::fail("failover", e),
        Ok(result) => match result.first("synchronized_standby_slots") {
            Some(slots) if !slots.is_empty() => Finding::pass(
                "failover",
                format!("failover slot; changes wait for the standbys' slots {slots}"),
            ),
            _ => Finding::fail(
                "failover",
                "synchronized_standby_slots is empty, so a promoted standby may lack changes pgcdc already wrote: set it on the primary to the standbys' physical slots (ALTER SYSTEM SET synchronized_standby_slots = '...'; SELECT pg_reload_conf())",
            ),
        },
    }
}

/// Free replication slots and WAL senders: pgcdc needs one of each.
async fn capacity(conn: &mut Connection) -> Finding {
    let query = "select current_setting('max_replication_slots')::int - (select count(*) from pg_catalog.pg_replication_slots) as free_slots, \
                 current_setting('max_wal_senders')::int - (select count(*) from pg_catalog.pg_stat_replication) as free_senders";
    match conn.simple_query(query).await {
        Err(e) => Finding::fail("capacity", e),
        Ok(result) => {
            let number = |column| {
                result
                    .first(column)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let (slots, senders) = (number("free_slots"), number("free_senders"));
            if slots < 1 || senders < 1 {
                Finding::fail(
                    "capacity",
                    format!(
                        "{slots} free replication slots and {senders} free WAL senders: raise max_replication_slots / max_wal_senders (ALTER SYSTEM ..., then restart) or drop unused slots"
                    ),
                )
            } else {
                Finding::pass(
                    "capacity",
                    format!("{slots} free replication slots, {senders} free WAL senders"),
                )
            }
        }
    }
}

/// The role needs REPLICATION (or superuser) to stream.
async fn role(conn: &mut Connection) -> Finding {
    let query = "select current_user as name, rolreplication::text as replication, rolsuper::text as superuser \
                 from pg_catalog.pg_roles where rolname = current_user";
    match conn.simple_query(query).await {
        Err(e) => Finding::fail("role", e),
        Ok(result) => {
            let name = result.first("name").unwrap_or_default().to_owned();
            let replication = result.first("replication") == Some("true");
            let superuser = result.first("superuser") == Some("true");
            if replication || superuser {
                Finding::pass("role", format!("{name} may stream (REPLICATION)"))
            } else {
                Finding::fail(
                    "role",
                    format!(
                        "role {name} lacks REPLICATION: run `ALTER ROLE {name} REPLICATION;` as a superuser"
                    ),
                )
            }
        }
    }
}

/// Per published table: SELECT rights (for the snapshot) and a replica identity that lets
/// PostgreSQL publish updates and deletes.
async fn tables(conn: &mut Connection, publication: &str) -> Vec<Finding> {
    let query = format!(
        "select quote_ident(t.schemaname) || '.' || quote_ident(t.tablename) as name, \
                has_table_privilege(c.oid, 'select')::text as can_select, \
                c.relreplident::text as identity, \
                exists(select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisprimary)::text as has_pk \
         from pg_catalog.pg_publication_tables t \
         join pg_catalog.pg_namespace n on n.nspname = t.schemaname \
         join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = t.tablename \
         where t.pubname = {} order by 1",
        crate::source::conn::quote_literal(publication)
    );
    let result = match conn.simple_query(&query).await {
        Ok(result) => result,
        Err(e) => return vec![Finding::fail("tables", e)],
    };
    let column = |name: &str| result.columns.iter().position(|c| c == name);
    let (Some(i_name), Some(i_select), Some(i_identity), Some(i_pk)) = (
        column("name"),
        column("can_select"),
        column("identity"),
        column("has_pk"),
    ) else {
        return vec![Finding::fail("tables", "unexpected reply from the catalog")];
    };
    let mut findings = Vec::new();
    for row in &result.rows {
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (name, select, identity, pk) = (get(i_name), get(i_select), get(i_identity), get(i_pk));
        if select != "true" {
            findings.push(Finding::fail(
                "table",
                format!("{name}: no SELECT right (needed for the snapshot): run `GRANT SELECT ON {name} TO <pgcdc role>;`"),
            ));
        }
        let identity_ok = match identity.as_str() {
            "f" | "i" => true,
            "d" => pk == "true",
            _ => false,
        };
        if identity_ok {
            let kind = match identity.as_str() {
                "f" => "FULL",
                "i" => "USING INDEX",
                _ => "DEFAULT (primary key)",
            };
            findings.push(Finding::pass(
                "table",
                format!("{name}: replica identity {kind}"),
            ));
        } else {
            findings.push(Finding::fail(
                "table",
                format!("{name}: no usable replica identity, so PostgreSQL rejects its UPDATEs and DELETEs once published: add a primary key or run `ALTER TABLE {name} REPLICA IDENTITY FULL;`"),
            ));
        }
    }
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
