//! The summary a torture leg prints: what was injected, what the workload did, how the files
//! compare with the table, and how every pgcdc process ended.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::common::{ChangeRow, TableState, diff_states, duplicate_keys, replay};
use crate::faults::Fault;
use crate::workload::WorkloadStats;

#[derive(Default)]
pub struct Report {
    leg: &'static str,
    seed: u64,
    faults: BTreeMap<&'static str, usize>,
    pub workload: WorkloadStats,
    rows_compared: usize,
    change_rows: usize,
    missing: usize,
    extra: usize,
    wrong: usize,
    duplicates: usize,
    /// The first differences, for the failure message.
    examples: Vec<String>,
    pub exits: BTreeMap<String, usize>,
    pub offences: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(leg: &'static str, seed: u64) -> Report {
        Report {
            leg,
            seed,
            ..Report::default()
        }
    }

    pub fn fault(&mut self, fault: Fault) {
        *self.faults.entry(fault.label()).or_default() += 1;
    }

    /// Replays `rows` and counts, key by key, how they differ from `expected`.
    pub fn compare(&mut self, expected: &TableState, rows: &[ChangeRow]) {
        let actual = replay(rows, &["id"]);
        self.rows_compared = expected.len();
        self.change_rows = rows.len();
        self.duplicates = duplicate_keys(rows);
        let diff = diff_states(expected, &actual);
        (self.missing, self.extra, self.wrong) =
            (diff.missing.len(), diff.extra.len(), diff.wrong.len());
        let missing = diff
            .missing
            .iter()
            .map(|(key, _)| format!("missing {key:?}"));
        let wrong = diff
            .wrong
            .iter()
            .map(|(key, row, other)| format!("wrong {key:?}: table {row:?}, files {other:?}"));
        let extra = diff.extra.iter().map(|(key, _)| format!("extra {key:?}"));
        self.examples = missing.chain(wrong).chain(extra).take(10).collect();
    }

    pub fn clean(&self) -> bool {
        self.missing == 0
            && self.extra == 0
            && self.wrong == 0
            && self.duplicates == 0
            && self.offences.is_empty()
            && self.rows_compared > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== torture leg {:?}, seed {} ({:.0} s) ==",
            self.leg,
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(name, n)| format!("{name} ×{n}"))
            .collect();
        writeln!(f, "faults injected:       {}", faults.join(", "))?;
        let w = &self.workload;
        writeln!(
            f,
            "workload:              {} transactions committed ({} large, {} truncates), {} rolled back on purpose, {} cut short by faults",
            w.committed, w.large, w.truncates, w.rolled_back, w.interrupted
        )?;
        writeln!(
            f,
            "rows compared:         {} (from {} change rows)",
            self.rows_compared, self.change_rows
        )?;
        writeln!(
            f,
            "missing {}, extra {}, wrong {}, duplicate change rows {}",
            self.missing, self.extra, self.wrong, self.duplicates
        )?;
        let exits: Vec<String> = self
            .exits
            .iter()
            .map(|(how, n)| format!("{how} ×{n}"))
            .collect();
        writeln!(f, "pgcdc exits:           {}", exits.join(", "))?;
        writeln!(
            f,
            "panics or secrets:     {}",
            if self.offences.is_empty() {
                "none".to_owned()
            } else {
                self.offences.join("\n")
            }
        )?;
        for example in &self.examples {
            writeln!(f, "  {example}")?;
        }
        Ok(())
    }
}
