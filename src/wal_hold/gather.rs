//! Reads the [`Facts`] in one SQL statement: one snapshot of the activity views, and one base for
//! every `age(xid)`, so the transactions' xid ages compare.
//!
//! Works on PostgreSQL 13 to 18: our slot is read with `to_jsonb` (its columns change between
//! versions), the other views only by columns every supported version has. A query text is cut
//! to its first line on the server, so the rest of a statement (values, secrets) never reaches
//! pgcdc.

use serde_json::Value;

use super::{Facts, OtherSlot, QUERY_CHARS, SlotFacts, Transaction, TransactionKind, Walsender};
use crate::lsn::Lsn;

/// The statement behind [`gather`]. A query keeps 81 characters of its first line: one more
/// than is shown, so the text can say the line was cut.
const SQL: &str = "
select jsonb_build_object(
  'current_wal_lsn', pg_current_wal_lsn()::text,
  'slot', (select to_jsonb(s) from pg_catalog.pg_replication_slots s where s.slot_name = $1),
  'walsender', (select jsonb_build_object('pid', r.pid, 'state', r.state, 'sent_lsn', r.sent_lsn::text)
                from pg_catalog.pg_stat_replication r
                join pg_catalog.pg_replication_slots s on s.active_pid = r.pid
                where s.slot_name = $1),
  'running', (select coalesce(jsonb_agg(jsonb_build_object(
                  'pid', a.pid,
                  'xid', a.backend_xid::text,
                  'xid_age', age(a.backend_xid),
                  'age_seconds', extract(epoch from clock_timestamp() - a.xact_start),
                  'database', a.datname,
                  'application', a.application_name,
                  'user', a.usename,
                  'state', a.state,
                  'query', left(split_part(ltrim(a.query, E' \\t\\r\\n'), E'\\n', 1), 81))), '[]'::jsonb)
              from pg_catalog.pg_stat_activity a
              where a.backend_xid is not null and a.pid <> pg_backend_pid()),
  'prepared', (select coalesce(jsonb_agg(jsonb_build_object(
                  'gid', p.gid,
                  'xid', p.transaction::text,
                  'xid_age', age(p.transaction),
                  'age_seconds', extract(epoch from clock_timestamp() - p.prepared),
                  'database', p.database,
                  'owner', p.owner)), '[]'::jsonb)
               from pg_catalog.pg_prepared_xacts p),
  'other_slots', (select coalesce(jsonb_agg(jsonb_build_object(
                  'name', s.slot_name,
                  'slot_type', s.slot_type,
                  'active', s.active,
                  'restart_lsn', s.restart_lsn::text,
                  'database', s.database)), '[]'::jsonb)
                  from pg_catalog.pg_replication_slots s where s.slot_name <> $1)
)::text";

/// Reads the facts about `slot` from the server.
pub async fn gather(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Facts, tokio_postgres::Error> {
    let row = client.query_one(SQL, &[&slot]).await?;
    let text: String = row.get(0);
    // The server built this JSON; unparsable text would be a server bug, and reads as no facts.
    let json: Value = serde_json::from_str(&text).unwrap_or_default();
    Ok(facts_from_json(&json))
}

/// The facts in the JSON [`gather`]'s statement returns. Lenient: a missing or NULL field is
/// absent, never an error, so a server that lacks something still gets the rest explained.
pub fn facts_from_json(json: &Value) -> Facts {
    let lsn = |v: &Value| v.as_str().and_then(|s| s.parse::<Lsn>().ok());
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let pid = |v: &Value| v.as_i64().and_then(|p| i32::try_from(p).ok());
    let slot = json
        .get("slot")
        .filter(|s| s.is_object())
        .map(|s| SlotFacts {
            active: s["active"].as_bool().unwrap_or(false),
            active_pid: pid(&s["active_pid"]),
            restart_lsn: lsn(&s["restart_lsn"]),
            confirmed_flush_lsn: lsn(&s["confirmed_flush_lsn"]),
        });
    let walsender = json
        .get("walsender")
        .filter(|w| w.is_object())
        .and_then(|w| {
            Some(Walsender {
                pid: pid(&w["pid"])?,
                state: text(&w["state"]).unwrap_or_default(),
                sent_lsn: lsn(&w["sent_lsn"]),
            })
        });
    let list = |key: &str| -> Vec<Value> {
        json.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let transaction = |t: &Value, kind: TransactionKind| -> Option<Transaction> {
        Some(Transaction {
            xid: text(&t["xid"])?,
            xid_age: t["xid_age"].as_i64()?,
            age_seconds: t["age_seconds"].as_f64().map(|s| s.max(0.0)),
            database: text(&t["database"]),
            kind,
        })
    };
    let running = list("running").into_iter().filter_map(|t| {
        let kind = TransactionKind::Running {
            pid: pid(&t["pid"])?,
            application: text(&t["application"]).unwrap_or_default(),
            user: text(&t["user"]),
            state: text(&t["state"]),
            query: first_line(t["query"].as_str().unwrap_or_default()),
        };
        transaction(&t, kind)
    });
    let prepared = list("prepared").into_iter().filter_map(|t| {
        let kind = TransactionKind::Prepared {
            gid: text(&t["gid"])?,
            owner: text(&t["owner"]),
        };
        transaction(&t, kind)
    });
    let mut transactions: Vec<Transaction> = running.chain(prepared).collect();
    transactions.sort_by_key(|t| std::cmp::Reverse(t.xid_age));
    let other_slots = list("other_slots")
        .iter()
        .filter_map(|s| {
            Some(OtherSlot {
                name: text(&s["name"])?,
                slot_type: text(&s["slot_type"]).unwrap_or_default(),
                active: s["active"].as_bool().unwrap_or(false),
                restart_lsn: lsn(&s["restart_lsn"]),
                database: text(&s["database"]),
            })
        })
        .collect();
    Facts {
        current_wal_lsn: json
            .get("current_wal_lsn")
            .and_then(lsn)
            .unwrap_or_default(),
        slot,
        walsender,
        transactions,
        other_slots,
    }
}

/// The first line of a statement, without control characters, cut at [`QUERY_CHARS`] with a
/// `…` that says so. The server already sent no more than the first line.
fn first_line(query: &str) -> String {
    let line = query
        .trim_start()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end();
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUERY_CHARS)
        .collect();
    if line.chars().count() > QUERY_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_part_and_sorts_transactions_oldest_first() {
        let json: Value = serde_json::from_str(
            r#"{
              "current_wal_lsn": "0/5000000",
              "slot": {"slot_name": "pgcdc", "active": true, "active_pid": 41,
                       "restart_lsn": "0/1000000", "confirmed_flush_lsn": "0/4000000",
                       "catalog_xmin": "740", "failover": false},
              "walsender": {"pid": 41, "state": "streaming", "sent_lsn": "0/4800000"},
              "running": [
                {"pid": 7, "xid": "750", "xid_age": 2, "age_seconds": 3.5, "database": "shop",
                 "application": "psql", "user": "app", "state": "active", "query": "update t"},
                {"pid": 9, "xid": "740", "xid_age": 12, "age_seconds": 600.25, "database": "shop",
                 "application": "", "user": null, "state": "idle in transaction", "query": "insert into audit values (1)"}
              ],
              "prepared": [{"gid": "tx-1", "xid": "745", "xid_age": 7, "age_seconds": 60,
                            "database": "shop", "owner": "app"}],
              "other_slots": [{"name": "old", "slot_type": "logical", "active": false,
                               "restart_lsn": "0/100", "database": "shop"},
                              {"name": "standby", "slot_type": "physical", "active": true,
                               "restart_lsn": null, "database": null}]
            }"#,
        )
        .unwrap();
        let facts = facts_from_json(&json);
        assert_eq!(facts.current_wal_lsn, "0/5000000".parse().unwrap());
        let slot = facts.slot.unwrap();
        assert!(slot.active);
        assert_eq!(slot.active_pid, Some(41));
        assert_eq!(slot.restart_lsn, Some("0/1000000".parse().unwrap()));
        assert_eq!(facts.walsender.unwrap().state, "streaming");
        let xids: Vec<&str> = facts.transactions.iter().map(|t| t.xid.as_str()).collect();
        assert_eq!(xids, ["740", "745", "750"]);
        assert!(matches!(
            &facts.transactions[0].kind,
            TransactionKind::Running { pid: 9, state: Some(s), .. } if s == "idle in transaction"
        ));
        assert!(matches!(
            &facts.transactions[1].kind,
            TransactionKind::Prepared { gid, .. } if gid == "tx-1"
        ));
        assert_eq!(facts.other_slots.len(), 2);
        assert_eq!(facts.other_slots[1].restart_lsn, None);
    }

    #[test]
    fn a_query_shows_only_its_first_line_cut_short() {
        assert_eq!(
            first_line("\n  update t set v = 1\nwhere secret = 'x'"),
            "update t set v = 1"
        );
        let long = "x".repeat(QUERY_CHARS + 1);
        let shown = first_line(&long);
        assert_eq!(shown.chars().count(), QUERY_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            first_line(&"y".repeat(QUERY_CHARS)),
            "y".repeat(QUERY_CHARS)
        );
        assert_eq!(first_line("a\tb\u{7}c"), "a b c");
    }

    #[test]
    fn a_missing_slot_and_empty_lists_are_no_facts_not_errors() {
        let json: Value = serde_json::from_str(
            r#"{"current_wal_lsn": "0/10", "slot": null, "walsender": null,
                "running": [], "prepared": [], "other_slots": []}"#,
        )
        .unwrap();
        let facts = facts_from_json(&json);
        assert_eq!(facts.slot, None);
        assert_eq!(facts.walsender, None);
        assert!(facts.transactions.is_empty() && facts.other_slots.is_empty());
        assert_eq!(facts_from_json(&Value::Null), Facts::default());
    }
}
