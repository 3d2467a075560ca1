//! Keeps one pgcdc process running, as systemd's `Restart=always` would, and remembers how each
//! one ended.
//!
//! pgcdc exits on faults it cannot ride out alone (a full disk, a sink it cannot write, a
//! database that is down when it starts); the supervisor starts it again after a short pause and
//! counts the exit codes. Every process's output is checked for panics and for secrets.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::Pgcdc;

/// Pause before a restart after pgcdc exited on its own (systemd's `RestartSec`).
const RESTART_PAUSE: Duration = Duration::from_millis(500);
/// How often the supervisor looks at the process.
const TICK: Duration = Duration::from_millis(100);

pub struct Supervisor {
    spawn: Box<dyn Fn() -> Pgcdc + Send>,
    current: Pgcdc,
    /// Words that must never appear in pgcdc's output (passwords, keys).
    secrets: Vec<String>,
    pub exits: BTreeMap<String, usize>,
    /// Output excerpts of processes that panicked or printed a secret.
    pub offences: Vec<String>,
    /// The last lines of each process that exited on its own, for the failure report.
    pub last_words: Vec<String>,
}

impl Supervisor {
    pub fn start(spawn: Box<dyn Fn() -> Pgcdc + Send>, secrets: Vec<String>) -> Supervisor {
        let current = spawn();
        Supervisor {
            spawn,
            current,
            secrets,
            exits: BTreeMap::new(),
            offences: Vec::new(),
            last_words: Vec::new(),
        }
    }

    /// SIGKILL at whatever point pgcdc is in, then a new process at once.
    pub fn kill(&mut self) {
        let status = self.current.kill();
        self.retire(status, false);
        self.current = (self.spawn)();
    }

    /// Watches the process for `span`, restarting it whenever it exits on its own.
    pub async fn tend(&mut self, span: Duration) {
        let until = Instant::now() + span;
        loop {
            if let Some(status) = self.current.try_exit() {
                self.retire(status, true);
                tokio::time::sleep(RESTART_PAUSE).await;
                self.current = (self.spawn)();
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep(TICK.min(until - now)).await;
        }
    }

    /// Ends the last process with SIGTERM (a clean stop) and checks its output too.
    pub async fn finish(&mut self) {
        self.current.terminate();
        let status = self.current.wait_exit(Duration::from_secs(60)).await;
        self.retire(status, false);
    }

    fn retire(&mut self, status: ExitStatus, on_its_own: bool) {
        *self.exits.entry(describe(status)).or_default() += 1;
        let output = self.current.output_text();
        if output.contains("panicked") {
            self.offences.push(format!(
                "pgcdc panicked ({}):\n{}",
                describe(status),
                tail(&output, 40)
            ));
        }
        for secret in &self.secrets {
            if output.contains(secret.as_str()) {
                self.offences.push(format!(
                    "pgcdc printed a secret ({} characters) ({}):\n{}",
                    secret.len(),
                    describe(status),
                    tail(&output, 40)
                ));
            }
        }
        if on_its_own {
            self.last_words
                .push(format!("{}:\n{}", describe(status), tail(&output, 6)));
        }
    }
}

/// "exit 0", "exit 1", "signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(9)) => "signal 9 (SIGKILL)".to_owned(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
