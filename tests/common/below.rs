//! Watches a local sink while pgcdc runs for files that land at or below a checkpoint already
//! written: the rule a loader relies on (README, "The file format") is that nothing is ever
//! written there, since a warehouse that applied everything up to a checkpoint never reads
//! below it again.
//!
//! The watch lists the data files, then reads the checkpoint, over and over. A file missing from
//! listing `i` was written after it, so after the checkpoint read before listing `i`: if its
//! first commit is at or below that checkpoint, the rule is broken. Reading in that order never
//! blames a file for a checkpoint written after it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::replay::{change_files, parse_file_name};

/// A running watch; [`BelowCheckpoint::stop`] returns what it found.
pub struct BelowCheckpoint {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

/// What a watch saw.
#[derive(Debug, Default)]
pub struct Report {
    /// `file (first commit) after checkpoint commit` for every file below a checkpoint.
    pub violations: Vec<String>,
    /// How many times the checkpoint moved while watching.
    pub checkpoint_moves: usize,
    /// Data files that appeared while watching.
    pub files_seen: usize,
}

impl BelowCheckpoint {
    /// Starts watching `tables` (`schema.table` folders) in the local sink `sink`, whose slot
    /// is `slot`.
    pub fn start(sink: &Path, slot: &str, tables: &[&str]) -> BelowCheckpoint {
        let stop = Arc::new(AtomicBool::new(false));
        let sink = sink.to_path_buf();
        let checkpoint = sink.join(format!("_pgcdc/{slot}/checkpoint.json"));
        let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || watch(&sink, &checkpoint, &tables, &flag));
        BelowCheckpoint {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn watch(sink: &Path, checkpoint: &Path, tables: &[String], stop: &AtomicBool) -> Report {
    let mut report = Report::default();
    let mut known: BTreeSet<PathBuf> = BTreeSet::new();
    let mut first_pass = true;
    let mut before = read_commit_lsn(checkpoint);
    while !stop.load(Ordering::Relaxed) {
        for table in tables {
            for file in change_files(sink, table).unwrap_or_default() {
                if !known.insert(file.clone()) || first_pass {
                    continue;
                }
                report.files_seen += 1;
                let first = file
                    .strip_prefix(sink)
                    .ok()
                    .and_then(|r| parse_file_name(r).ok())
                    .and_then(|n| u64::from_str_radix(&n.first, 16).ok());
                if let (Some(first), Some(ck)) = (first, before)
                    && first <= ck
                {
                    report.violations.push(format!(
                        "{} (first commit {first:X}) appeared after checkpoint {ck:X}",
                        file.display()
                    ));
                }
            }
        }
        first_pass = false;
        let now = read_commit_lsn(checkpoint);
        if now != before {
            report.checkpoint_moves += 1;
        }
        before = now.or(before);
        std::thread::sleep(Duration::from_millis(5));
    }
    report
}

/// The checkpoint's `commit_lsn` (`X/Y`), if it can be read now (it is replaced atomically, but
/// may not exist yet).
fn read_commit_lsn(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (hi, lo) = value.get("commit_lsn")?.as_str()?.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}
