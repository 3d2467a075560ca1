//! From [`Facts`] to ranked [`Cause`]s. Pure: no I/O, no clock; every figure comes from the facts.

use super::{Cause, Facts, Holder, Transaction};
use crate::lsn::Lsn;

/// A cause below one default WAL segment is not worth a line: `restart_lsn` only moves at the
/// server's running-transactions records (every 15 s and at checkpoints) and pgcdc confirms at
/// window ends, so a few MiB behind is how a healthy slot looks on a busy server.
pub const MIN_BYTES: u64 = 16 * 1024 * 1024;

/// Every share of the WAL the facts show, whatever its size, in no particular order: what the
/// metric reports. The slot's own shares (all but `other_slot`) add up to its retained WAL.
pub fn breakdown(facts: &Facts) -> Vec<Cause> {
    let current = facts.current_wal_lsn;
    let mut out = Vec::new();
    let ours = facts.slot.as_ref().and_then(|slot| {
        // No restart_lsn: the slot reserves no WAL (invalidated, or not yet initialised).
        let restart = slot.restart_lsn?.min(current);
        Some((slot, restart))
    });
    if let Some((slot, restart)) = ours {
        let confirmed = slot
            .confirmed_flush_lsn
            .unwrap_or(restart)
            .clamp(restart, current);
        if !slot.active {
            out.push(share(current, confirmed, Holder::PgcdcStopped));
        } else if let Some(walsender) = &facts.walsender {
            let sent = walsender
                .sent_lsn
                .unwrap_or(confirmed)
                .clamp(confirmed, current);
            out.push(share(
                current,
                sent,
                Holder::ServerSending {
                    walsender: walsender.clone(),
                },
            ));
            out.push(share(sent, confirmed, Holder::PgcdcLag));
        } else {
            // Held by something that is not a walsender (a SQL decoding function): no sent_lsn.
            out.push(share(current, confirmed, Holder::PgcdcLag));
        }
        out.push(share(
            confirmed,
            restart,
            Holder::Transaction {
                transaction: holder(facts).cloned(),
            },
        ));
    }
    let our_restart = ours.map(|(_, restart)| restart);
    for slot in &facts.other_slots {
        let Some(restart) = slot.restart_lsn else {
            continue;
        };
        if our_restart.is_none_or(|ours| restart < ours) {
            out.push(share(
                current,
                restart,
                Holder::OtherSlot { slot: slot.clone() },
            ));
        }
    }
    out
}

fn share(to: Lsn, from: Lsn, holder: Holder) -> Cause {
    Cause {
        bytes: to.saturating_sub(from),
        holder,
    }
}

/// The causes worth a line, biggest first: every share of at least [`MIN_BYTES`], and a stopped
/// pgcdc whatever it holds so far (it only grows from there).
pub fn causes(facts: &Facts) -> Vec<Cause> {
    let mut causes: Vec<Cause> = breakdown(facts)
        .into_iter()
        .filter(|c| c.bytes >= MIN_BYTES || c.holder == Holder::PgcdcStopped)
        .collect();
    causes.sort_by_key(|c| std::cmp::Reverse(c.bytes));
    causes
}

/// The running-transactions interval of the server (`LOG_SNAPSHOT_INTERVAL_MS`): `restart_lsn`
/// only moves at those records, so it trails the confirmed position by up to this much anyway,
/// and a transaction younger than that cannot be told apart from the usual trail.
pub const HOLD_MIN_SECONDS: f64 = 15.0;

/// The transaction that holds the slot's decoding position: the oldest open one with an xid,
/// running or prepared. An xid is assigned at a transaction's first write, so the oldest xid has
/// the earliest first change, which is where decoding must restart until it ends; one that has
/// not written (no xid) holds nothing. Not named while younger than [`HOLD_MIN_SECONDS`]; named
/// when its age is unknown (pgcdc's role may not see other users' `xact_start`).
///
/// The slot's `catalog_xmin` does not single it out: it is pinned to the snapshot the holder
/// was first decoded with, which is older than the holder's own xid.
pub fn holder(facts: &Facts) -> Option<&Transaction> {
    facts.slot.as_ref()?;
    let oldest = facts.transactions.iter().max_by_key(|t| t.xid_age)?;
    match oldest.age_seconds {
        Some(age) if age < HOLD_MIN_SECONDS => None,
        _ => Some(oldest),
    }
}

/// Bytes per `cause` label, every label present (0 when the cause holds nothing), for
/// `pgcdc_slot_wal_held_bytes`. `other_slot` is the largest other slot's.
pub fn by_label(breakdown: &[Cause]) -> Vec<(&'static str, u64)> {
    Holder::LABELS
        .iter()
        .map(|label| {
            let bytes = breakdown
                .iter()
                .filter(|c| c.holder.label() == *label)
                .map(|c| c.bytes)
                .max()
                .unwrap_or(0);
            (*label, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{OtherSlot, SlotFacts, TransactionKind, Walsender};
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn at(mib: u64) -> Lsn {
        Lsn::new(mib * MIB)
    }

    /// A slot streaming at 1000 MiB of WAL: restart at 100, confirmed at 700, sent at 900.
    fn streaming() -> Facts {
        Facts {
            current_wal_lsn: at(1000),
            slot: Some(SlotFacts {
                active: true,
                active_pid: Some(41),
                restart_lsn: Some(at(100)),
                confirmed_flush_lsn: Some(at(700)),
            }),
            walsender: Some(Walsender {
                pid: 41,
                state: "streaming".to_owned(),
                sent_lsn: Some(at(900)),
            }),
            transactions: Vec::new(),
            other_slots: Vec::new(),
        }
    }

    fn running(pid: i32, xid_age: i64) -> Transaction {
        Transaction {
            xid: (1000 - xid_age).to_string(),
            xid_age,
            age_seconds: Some(60.0),
            database: Some("shop".to_owned()),
            kind: TransactionKind::Running {
                pid,
                application: "psql".to_owned(),
                user: Some("app".to_owned()),
                state: Some("idle in transaction".to_owned()),
                query: "insert into audit values (1)".to_owned(),
            },
        }
    }

    fn labels(causes: &[Cause]) -> Vec<(&'static str, u64)> {
        causes
            .iter()
            .map(|c| (c.holder.label(), c.bytes / MIB))
            .collect()
    }

    #[test]
    fn the_shares_of_a_streaming_slot_add_up_to_its_retained_wal() {
        let facts = streaming();
        let shares = breakdown(&facts);
        assert_eq!(
            labels(&shares),
            [
                ("server_sending", 100),
                ("pgcdc_lag", 200),
                ("transaction", 600)
            ]
        );
        let total: u64 = shares.iter().map(|c| c.bytes).sum();
        assert_eq!(total, at(1000).saturating_sub(at(100)));
        assert_eq!(
            labels(&causes(&facts)),
            [
                ("transaction", 600),
                ("pgcdc_lag", 200),
                ("server_sending", 100)
            ],
            "biggest first"
        );
    }

    #[test]
    fn the_oldest_transaction_with_an_xid_is_named() {
        let mut facts = streaming();
        facts.transactions = vec![running(7, 3), running(9, 12)];
        let causes = causes(&facts);
        let Holder::Transaction {
            transaction: Some(t),
        } = &causes[0].holder
        else {
            panic!("{causes:?}")
        };
        assert!(matches!(t.kind, TransactionKind::Running { pid: 9, .. }));
        assert_eq!(holder(&facts).map(|t| t.xid_age), Some(12));
    }

    #[test]
    fn a_transaction_younger_than_the_running_xacts_interval_is_not_named() {
        let mut facts = streaming();
        let mut young = running(7, 3);
        young.age_seconds = Some(HOLD_MIN_SECONDS - 1.0);
        facts.transactions = vec![young.clone()];
        assert_eq!(holder(&facts), None);
        let causes = causes(&facts);
        assert_eq!(
            causes[0].holder,
            Holder::Transaction { transaction: None },
            "the share is still there, unnamed"
        );
        // Another user's session whose start pgcdc may not see: named, its age unknown.
        young.age_seconds = None;
        facts.transactions = vec![young.clone()];
        assert_eq!(holder(&facts), Some(&young));
    }

    #[test]
    fn a_prepared_transaction_older_than_any_session_is_the_holder() {
        let mut facts = streaming();
        let prepared = Transaction {
            xid: "900".to_owned(),
            xid_age: 40,
            age_seconds: Some(86_400.0),
            database: None,
            kind: TransactionKind::Prepared {
                gid: "batch-17".to_owned(),
                owner: Some("app".to_owned()),
            },
        };
        facts.transactions = vec![running(9, 12), prepared.clone()];
        assert_eq!(holder(&facts), Some(&prepared));
    }

    #[test]
    fn a_stopped_pgcdc_is_always_named_and_holds_everything_after_its_confirmed_position() {
        let mut facts = streaming();
        facts.walsender = None;
        if let Some(slot) = facts.slot.as_mut() {
            slot.active = false;
            slot.active_pid = None;
        }
        assert_eq!(
            labels(&causes(&facts)),
            [("transaction", 600), ("pgcdc_stopped", 300)]
        );
        // Caught up and stopped: nothing held yet, still the first thing to know.
        if let Some(slot) = facts.slot.as_mut() {
            slot.restart_lsn = Some(at(1000));
            slot.confirmed_flush_lsn = Some(at(1000));
        }
        assert_eq!(labels(&causes(&facts)), [("pgcdc_stopped", 0)]);
    }

    #[test]
    fn small_shares_are_no_cause() {
        let mut facts = streaming();
        facts.current_wal_lsn = at(120);
        if let Some(slot) = facts.slot.as_mut() {
            slot.confirmed_flush_lsn = Some(at(110));
        }
        if let Some(w) = facts.walsender.as_mut() {
            w.sent_lsn = Some(at(115));
        }
        assert_eq!(causes(&facts), Vec::<Cause>::new());
        assert_eq!(breakdown(&facts).len(), 3);
    }

    #[test]
    fn positions_out_of_order_never_count_twice() {
        // Read between the walsender's updates: sent behind confirmed, confirmed past current.
        let mut facts = streaming();
        if let Some(w) = facts.walsender.as_mut() {
            w.sent_lsn = Some(at(50));
        }
        if let Some(slot) = facts.slot.as_mut() {
            slot.confirmed_flush_lsn = Some(at(2000));
        }
        let total: u64 = breakdown(&facts).iter().map(|c| c.bytes).sum();
        assert_eq!(total, 900 * MIB);
    }

    #[test]
    fn only_slots_older_than_ours_are_named_and_with_all_they_retain() {
        let mut facts = streaming();
        let slot = |name: &str, restart: Option<u64>| OtherSlot {
            name: name.to_owned(),
            slot_type: "logical".to_owned(),
            active: false,
            restart_lsn: restart.map(at),
            database: Some("shop".to_owned()),
        };
        facts.other_slots = vec![
            slot("abandoned", Some(10)),
            slot("newer", Some(500)),
            slot("lost", None),
        ];
        let causes = causes(&facts);
        assert_eq!(causes[0].bytes, 990 * MIB);
        assert!(
            matches!(&causes[0].holder, Holder::OtherSlot { slot } if slot.name == "abandoned")
        );
        assert_eq!(causes.len(), 4, "{causes:?}");
        let metric = by_label(&breakdown(&facts));
        assert_eq!(metric.len(), Holder::LABELS.len());
        assert!(metric.contains(&("other_slot", 990 * MIB)));
        assert!(metric.contains(&("pgcdc_stopped", 0)));
    }

    #[test]
    fn without_our_slot_only_other_slots_remain() {
        let mut facts = streaming();
        facts.slot = None;
        facts.transactions = vec![running(9, 12)];
        assert_eq!(holder(&facts), None);
        assert_eq!(causes(&facts), Vec::<Cause>::new());
        // An invalidated slot (no restart_lsn) reserves nothing either.
        let mut facts = streaming();
        if let Some(slot) = facts.slot.as_mut() {
            slot.restart_lsn = None;
        }
        assert_eq!(breakdown(&facts), Vec::<Cause>::new());
    }
}
