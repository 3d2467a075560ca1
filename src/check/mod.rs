//! `pgcdc check`: validates the configuration, the server and the sink without streaming, and
//! prints each finding with what to do about it. Exit status 0 only when everything passes.

use std::fmt::Write as _;

mod idle_timeout;

use tokio::sync::watch;

use crate::config::{Config, SinkTarget};
use crate::conninfo::redacted_target;
use crate::publication::{self, Publications};
use crate::sink::{LocalSink, S3Sink};
use crate::snapshot;
use crate::source::slot::WalLevel;
use crate::source::{Connection, slot};

/// How a finding turns out. A warning does not fail the check: the setup works, but something in
/// it will hurt later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

impl Finding {
    fn new(level: Level, what: &str, detail: impl std::fmt::Display) -> Finding {
        Finding {
            level,
            what: what.to_owned(),
            detail: detail.to_string(),
        }
    }

    fn pass(what: &str, detail: impl std::fmt::Display) -> Finding {
        Finding::new(Level::Pass, what, detail)
    }

    fn warn(what: &str, detail: impl std::fmt::Display) -> Finding {
        Finding::new(Level::Warn, what, detail)
    }

    fn fail(what: &str, detail: impl std::fmt::Display) -> Finding {
        Finding::new(Level::Fail, what, detail)
    }

    /// Whether the check passes with this finding (warnings do).
    pub fn ok(&self) -> bool {
        self.level != Level::Fail
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
                Ok(WalLevel::Logical) => Finding::pass("wal_level", "logical"),
                Ok(WalLevel::LogicalOnDemand { effective }) => Finding::pass(
                    "wal_level",
                    format!(
                        "replica, effective_wal_level {effective}: the server decodes once a logical slot exists (PostgreSQL 19+); creating the first slot may wait for a checkpoint"
                    ),
                ),
                Err(e) => Finding::fail("wal_level", e),
                Ok(WalLevel::Insufficient(level)) => Finding::fail("wal_level", level),
            });
            let publications = &config.source.publications;
            let first = publications.first();
            let quoted = publications
                .names()
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            findings.push(match slot::publication_tables(&mut conn, publications).await {
                Ok(tables) if tables.is_empty() => Finding::fail(
                    "publication",
                    format!("{quoted} has no tables: add them with `ALTER PUBLICATION {first} ADD TABLE ...;`"),
                ),
                Ok(tables) => Finding::pass(
                    "publication",
                    format!("{quoted}: {}", tables.join(", ")),
                ),
                Err(e) => Finding::fail("publication", e),
            });
            findings.push(capacity(&mut conn).await);
            if config.source.failover {
                findings.push(failover(&mut conn).await);
            }
            findings.push(role(&mut conn).await);
            findings.extend(idle_timeout::check(&mut conn, config.source.maintenance_window).await);
            findings.extend(tables(&mut conn, publications).await);
            findings.extend(projections(config).await);
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
async fn tables(conn: &mut Connection, publications: &Publications) -> Vec<Finding> {
    let names = slot::in_list(publications);
    let query = format!(
        "select distinct quote_ident(t.schemaname) || '.' || quote_ident(t.tablename) as name, \
                has_table_privilege(c.oid, 'select')::text as can_select, \
                c.relreplident::text as identity, \
                exists(select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisprimary)::text as has_pk \
         from pg_catalog.pg_publication_tables t \
         join pg_catalog.pg_namespace n on n.nspname = t.schemaname \
         join pg_catalog.pg_class c on c.relnamespace = n.oid and c.relname = t.tablename \
         where t.pubname in ({names}) order by 1"
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

/// Per table, what leaves the database: the published columns and the row filter, as the copy
/// and the stream apply them; and a warning for a row filter that reads columns outside the
/// replica identity, for then PostgreSQL rejects the table's UPDATEs and DELETEs.
async fn projections(config: &Config) -> Vec<Finding> {
    let publications = &config.source.publications;
    let (client, connection) = match crate::source::sql_connect(&config.source).await {
        Ok(pair) => pair,
        Err(e) => return vec![Finding::fail("columns", e)],
    };
    let connection_task = tokio::spawn(connection);
    let mut findings = Vec::new();
    match snapshot::published_tables(&client, publications).await {
        Err(e) => findings.push(Finding::fail("columns", e)),
        Ok(tables) => {
            for t in &tables {
                let names: Vec<&str> = t.table.columns.iter().map(|c| c.name.as_str()).collect();
                let rows = t
                    .row_filter
                    .as_deref()
                    .map_or("every row".to_owned(), |f| format!("rows where {f}"));
                findings.push(Finding::pass(
                    "columns",
                    format!("{}: publishes ({}); {rows}", t.table, names.join(", ")),
                ));
            }
        }
    }
    match filter_identity_gaps(&client, publications).await {
        Ok(gaps) => findings.extend(gaps.into_iter().map(|g| Finding::warn("row filter", g))),
        Err(e) => findings.push(Finding::fail("row filter", e)),
    }
    connection_task.abort();
    findings
}

/// Row filters (PostgreSQL 15+) of publications that publish UPDATE or DELETE and read columns
/// outside the table's replica identity, each described with the fix.
async fn filter_identity_gaps(
    client: &tokio_postgres::Client,
    publications: &Publications,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let version: i32 = client
        .query_one("select current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if version < 150_000 {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "select p.pubname::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    pr.prqual::text, c.relreplident = 'f', \
                    coalesce((select i.indkey::int2[] from pg_catalog.pg_index i \
                              where i.indrelid = c.oid \
                                and case c.relreplident when 'd' then i.indisprimary \
                                                        when 'i' then i.indisreplident \
                                                        else false end), '{}'), \
                    array(select a.attnum from pg_catalog.pg_attribute a \
                          where a.attrelid = c.oid and a.attnum > 0 order by a.attnum), \
                    array(select a.attname::text from pg_catalog.pg_attribute a \
                          where a.attrelid = c.oid and a.attnum > 0 order by a.attnum) \
             from pg_catalog.pg_publication_rel pr \
             join pg_catalog.pg_publication p on p.oid = pr.prpubid \
             join pg_catalog.pg_class c on c.oid = pr.prrelid \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where pr.prqual is not null and (p.pubupdate or p.pubdelete) \
               and p.pubname = any($1::text[]) \
             order by 2, 1",
            &[&publications.names()],
        )
        .await?;
    let mut gaps = Vec::new();
    for row in rows {
        let (publication, table, qual): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let full: bool = row.get(3);
        let identity: Vec<i16> = row.get(4);
        let (attnums, attnames): (Vec<i16>, Vec<String>) = (row.get(5), row.get(6));
        let identity = (!full).then_some(identity.as_slice());
        let outside =
            publication::outside_identity(&publication::row_filter_attnums(&qual), identity);
        if outside.is_empty() {
            continue;
        }
        let named: Vec<&str> = outside
            .iter()
            .filter_map(|n| {
                attnums
                    .iter()
                    .position(|a| a == n)
                    .and_then(|i| attnames.get(i))
            })
            .map(String::as_str)
            .collect();
        gaps.push(format!(
            "{table}: the row filter of publication {publication} reads {}, outside the replica identity, so PostgreSQL rejects UPDATE and DELETE on {table} while {publication} publishes them: filter on replica identity columns only, or widen the identity (`ALTER TABLE {table} REPLICA IDENTITY FULL;` or USING INDEX)",
            named.join(", ")
        ));
    }
    Ok(gaps)
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
            match f.level {
                Level::Pass => "ok",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            },
            f.what,
            f.detail
        );
    }
    let failed = findings.iter().filter(|f| !f.ok()).count();
    if failed == 0 {
        out.push_str("all checks passed\n");
    } else {
        let _ = writeln!(out, "{failed} check(s) failed");
    }
    out
}
