//! The causes said to a person: what holds the WAL and what to do about it, for the text and the
//! JSON of `pgcdc slot status`. Pure.

use std::time::Duration;

use serde::Serialize;

use super::{Cause, Holder, MIN_BYTES, Transaction, TransactionKind};

/// A cause with its sentence and its remedy, as `slot status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    #[serde(flatten)]
    pub cause: Cause,
    pub summary: String,
    pub what_to_do: String,
}

pub fn explain(causes: Vec<Cause>) -> Vec<Explained> {
    causes
        .into_iter()
        .map(|cause| Explained {
            summary: cause.summary(),
            what_to_do: cause.what_to_do(),
            cause,
        })
        .collect()
}

impl Cause {
    /// One line: what holds how much.
    pub fn summary(&self) -> String {
        let bytes = size(self.bytes);
        match &self.holder {
            Holder::PgcdcStopped => format!(
                "nothing streams from the slot (no active pid): {bytes} after its confirmed position wait for pgcdc"
            ),
            Holder::PgcdcLag => format!(
                "pgcdc has received {bytes} it has not made durable yet (windows in flight, or the sink failing)"
            ),
            Holder::ServerSending { walsender } => format!(
                "the server has not sent {bytes} yet: walsender pid {} is {}",
                walsender.pid,
                if walsender.state.is_empty() {
                    "in an unknown state"
                } else {
                    walsender.state.as_str()
                }
            ),
            Holder::Transaction {
                transaction: Some(t),
            } => format!(
                "{} keeps restart_lsn {bytes} behind (decoding restarts at its first change)",
                transaction(t)
            ),
            Holder::Transaction { transaction: None } => format!(
                "restart_lsn is {bytes} behind the confirmed position; no open transaction visible to pgcdc is old enough to hold it"
            ),
            Holder::OtherSlot { slot } => format!(
                "another slot, {} ({}, {}{}), retains {bytes}: not pgcdc's WAL, but the same disk",
                slot.name,
                slot.slot_type,
                if slot.active { "active" } else { "inactive" },
                slot.database
                    .as_deref()
                    .map(|d| format!(", database {d}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// What a person can do about it.
    pub fn what_to_do(&self) -> String {
        match &self.holder {
            Holder::PgcdcStopped => "start pgcdc (`pgcdc run`), or find out why it stopped: its logs, `pgcdc_errors_total` and `pgcdc_sink_errors_total`".to_owned(),
            Holder::PgcdcLag => "if it keeps growing, check pgcdc's logs and `pgcdc_sink_errors_total` (a sink outage holds every window) and `pgcdc_window_age_seconds`".to_owned(),
            Holder::ServerSending { walsender } => {
                let why = match walsender.state.as_str() {
                    "startup" | "catchup" => "it is reading old WAL after a (re)start and catches up by itself",
                    _ => "it is decoding: a huge transaction spills to disk (`pgcdc_slot_stats{stat=\"spill_bytes\"}`)",
                };
                format!("{why}; check the server's CPU and disk, and raise logical_decoding_work_mem if transactions spill")
            }
            Holder::Transaction { transaction: Some(t) } => match &t.kind {
                TransactionKind::Running { pid, .. } => format!(
                    "commit or roll it back, or end its session: select pg_terminate_backend({pid})"
                ),
                TransactionKind::Prepared { gid, .. } => {
                    let gid = gid.replace('\'', "''");
                    format!(
                        "finish it{}: COMMIT PREPARED '{gid}' or ROLLBACK PREPARED '{gid}'",
                        t.database.as_deref().map(|d| format!(" in database {d}")).unwrap_or_default()
                    )
                }
            },
            Holder::Transaction { transaction: None } => "usually nothing: restart_lsn moves at the server's next running-transactions record (every 15 s, and at checkpoints) once pgcdc confirms past it; if it stays behind, look for the oldest transaction in pg_stat_activity (backend_xid) and pg_prepared_xacts".to_owned(),
            Holder::OtherSlot { slot } if slot.active => format!(
                "its consumer is behind: see who streams from {} in pg_stat_replication",
                slot.name
            ),
            Holder::OtherSlot { slot } => format!(
                "if nothing uses it any more, drop it: select pg_drop_replication_slot('{}')",
                slot.name.replace('\'', "''")
            ),
        }
    }
}

/// "running transaction pid 9 (psql, user app, idle in transaction) open for 10m, xid 740:
/// insert into audit ..."
fn transaction(t: &Transaction) -> String {
    let age = t
        .age_seconds
        .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string());
    match &t.kind {
        TransactionKind::Running {
            pid,
            application,
            user,
            state,
            query,
        } => {
            let mut about = vec![if application.is_empty() {
                "no application_name".to_owned()
            } else {
                application.clone()
            }];
            about.extend(user.as_ref().map(|u| format!("user {u}")));
            about.extend(t.database.as_ref().map(|d| format!("database {d}")));
            about.extend(state.clone());
            let query = if query.is_empty() {
                String::new()
            } else {
                format!(": {query}")
            };
            format!(
                "transaction pid {pid} ({}) open for {}, xid {}{query}",
                about.join(", "),
                age.as_deref().unwrap_or("an unknown time"),
                t.xid
            )
        }
        TransactionKind::Prepared { gid, owner } => format!(
            "prepared transaction '{gid}' ({}) prepared {} ago, xid {}",
            [
                owner.as_ref().map(|o| format!("owner {o}")),
                t.database.as_ref().map(|d| format!("database {d}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
            age.as_deref().unwrap_or("an unknown time"),
            t.xid
        ),
    }
}

fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string()
}

/// The "what holds the WAL" section of `slot status`: one cause per line, biggest first, each
/// followed by what to do.
pub fn render(explained: &[Explained]) -> String {
    const LABEL: &str = "what holds the WAL   ";
    if explained.is_empty() {
        return format!(
            "{LABEL}nothing beyond the usual (no cause holds {} or more)\n",
            size(MIN_BYTES)
        );
    }
    let mut out = format!("{LABEL}biggest first\n");
    for e in explained {
        out.push_str(&format!("  {:>10}  {}\n", size(e.cause.bytes), e.summary));
        out.push_str(&format!("  {:>10}  do: {}\n", "", e.what_to_do));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{OtherSlot, Walsender};
    use super::*;

    fn running(query: &str, age: Option<f64>) -> Transaction {
        Transaction {
            xid: "740".to_owned(),
            xid_age: 12,
            age_seconds: age,
            database: Some("shop".to_owned()),
            kind: TransactionKind::Running {
                pid: 4242,
                application: "billing".to_owned(),
                user: Some("app".to_owned()),
                state: Some("idle in transaction".to_owned()),
                query: query.to_owned(),
            },
        }
    }

    #[test]
    fn a_transaction_is_named_by_pid_application_age_and_query() {
        let cause = Cause {
            bytes: 600 * 1024 * 1024,
            holder: Holder::Transaction {
                transaction: Some(running("insert into audit values (1)", Some(612.4))),
            },
        };
        assert_eq!(
            cause.summary(),
            "transaction pid 4242 (billing, user app, database shop, idle in transaction) open for 10m 12s, xid 740: insert into audit values (1) keeps restart_lsn 600.0 MiB behind (decoding restarts at its first change)"
        );
        assert_eq!(
            cause.what_to_do(),
            "commit or roll it back, or end its session: select pg_terminate_backend(4242)"
        );
        let hidden = Cause {
            bytes: 1,
            holder: Holder::Transaction {
                transaction: Some(running("", None)),
            },
        };
        assert!(
            hidden
                .summary()
                .contains("open for an unknown time, xid 740 keeps")
        );
    }

    #[test]
    fn a_prepared_transaction_says_how_to_finish_it() {
        let cause = Cause {
            bytes: 1,
            holder: Holder::Transaction {
                transaction: Some(Transaction {
                    xid: "900".to_owned(),
                    xid_age: 40,
                    age_seconds: Some(90_000.0),
                    database: Some("shop".to_owned()),
                    kind: TransactionKind::Prepared {
                        gid: "o'brien".to_owned(),
                        owner: Some("app".to_owned()),
                    },
                }),
            },
        };
        assert!(
            cause
                .summary()
                .starts_with("prepared transaction 'o'brien' (owner app, database shop) prepared 1day 1h ago, xid 900"),
            "{}",
            cause.summary()
        );
        assert_eq!(
            cause.what_to_do(),
            "finish it in database shop: COMMIT PREPARED 'o''brien' or ROLLBACK PREPARED 'o''brien'"
        );
    }

    #[test]
    fn every_cause_has_a_line_and_a_remedy() {
        let slot = |active| OtherSlot {
            name: "old_sub".to_owned(),
            slot_type: "logical".to_owned(),
            active,
            restart_lsn: None,
            database: None,
        };
        let holders = [
            Holder::PgcdcStopped,
            Holder::PgcdcLag,
            Holder::ServerSending {
                walsender: Walsender {
                    pid: 41,
                    state: "catchup".to_owned(),
                    sent_lsn: None,
                },
            },
            Holder::Transaction { transaction: None },
            Holder::OtherSlot { slot: slot(false) },
            Holder::OtherSlot { slot: slot(true) },
        ];
        let explained = explain(
            holders
                .into_iter()
                .map(|holder| Cause {
                    bytes: 2 * 1024 * 1024 * 1024,
                    holder,
                })
                .collect(),
        );
        for e in &explained {
            assert!(e.summary.contains("2.0 GiB"), "{}", e.summary);
            assert!(!e.what_to_do.is_empty());
        }
        assert!(explained[2].what_to_do.contains("catches up by itself"));
        assert!(
            explained[4]
                .what_to_do
                .contains("select pg_drop_replication_slot('old_sub')")
        );
        let text = render(&explained);
        assert_eq!(text.lines().count(), 1 + 2 * explained.len());
        assert!(text.starts_with("what holds the WAL   biggest first\n"));
        let json = serde_json::to_value(&explained[4]).unwrap();
        assert_eq!(json["cause"], "other_slot");
        assert_eq!(json["bytes"], 2u64 * 1024 * 1024 * 1024);
        assert_eq!(json["slot"]["name"], "old_sub");
        assert!(json["what_to_do"].is_string() && json["summary"].is_string());
    }

    #[test]
    fn nothing_to_say_is_said_in_one_line() {
        assert_eq!(
            render(&[]),
            "what holds the WAL   nothing beyond the usual (no cause holds 16.0 MiB or more)\n"
        );
    }

    #[test]
    fn a_transaction_in_json_carries_its_pid() {
        let e = explain(vec![Cause {
            bytes: 5,
            holder: Holder::Transaction {
                transaction: Some(running("select 1", Some(1.0))),
            },
        }]);
        let json = serde_json::to_value(&e[0]).unwrap();
        assert_eq!(json["cause"], "transaction");
        assert_eq!(json["transaction"]["kind"], "running");
        assert_eq!(json["transaction"]["pid"], 4242);
        assert_eq!(json["transaction"]["query"], "select 1");
    }
}
