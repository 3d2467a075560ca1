//! The real `pgcdc` binary as a child process.
//!
//! stdout and stderr go to files in a temp dir rather than pipes: a chatty process can never
//! block on a full pipe, and the output is still there to print when a test fails (the drop of a
//! [`Pgcdc`] prints it when the test is panicking).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::wait::{POLL_INTERVAL, wait_until};

/// Path of the binary under test; cargo builds it for integration tests.
pub const PGCDC_BIN: &str = env!("CARGO_BIN_EXE_pgcdc");

/// A running (or exited) `pgcdc` process. Dropping it kills the process if it still runs.
pub struct Pgcdc {
    child: Child,
    exited: Option<ExitStatus>,
    /// Set when a panic message already carried the output, so drop does not print it again.
    output_shown: bool,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Pgcdc {
    /// `pgcdc run --config <config>`.
    pub fn run(config: &Path) -> Pgcdc {
        Pgcdc::spawn(
            [
                OsStr::new("run"),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
            &[],
        )
    }

    /// `pgcdc <args>` with extra environment variables (e.g. `PGCDC_*` overrides, `RUST_LOG`).
    /// stdin is closed: confirmation prompts must not hang a test.
    pub fn spawn<I, S>(args: I, envs: &[(&str, &str)]) -> Pgcdc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Pgcdc::spawn_program(Path::new(PGCDC_BIN), args, envs)
    }

    /// Any program under the same supervision (the harness's own tests use this, as they must
    /// not depend on what the pgcdc binary does).
    pub fn spawn_program<I, S>(program: &Path, args: I, envs: &[(&str, &str)]) -> Pgcdc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = tempfile::Builder::new()
            .prefix("pgcdc-proc-")
            .tempdir()
            .expect("creating a temp dir for pgcdc's output");
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let create = |path: &Path| {
            std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RUST_BACKTRACE", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(create(&stdout))
            .stderr(create(&stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Pgcdc {
            child,
            exited: None,
            output_shown: false,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM: pgcdc finishes its open window, uploads, checkpoints and exits 0.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (a name as `kill -s` takes it: TERM, INT, HUP, KILL, STOP, CONT, ...).
    /// Does nothing once the process has been reaped: its pid may belong to someone else by now.
    pub fn signal(&self, signal: &str) {
        if self.exited.is_some() {
            return;
        }
        // kill(1) rather than libc::kill: no extra dev-dependency, same syscall. Until we reap
        // the child its pid cannot be reused, and signalling a zombie succeeds.
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(
            status.success(),
            "kill -s {signal} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGKILL and reap: a crash at an arbitrary point.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("waiting for pgcdc");
        self.exited = Some(status);
        status
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("polling pgcdc");
        }
        self.exited
    }

    /// Waits for the process to exit; panics with its output if `deadline` passes first.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if started.elapsed() >= deadline {
                self.output_shown = true;
                panic!(
                    "timed out after {:.1}s waiting for pgcdc (pid {}) to exit\n{}",
                    started.elapsed().as_secs_f64(),
                    self.pid(),
                    self.output_text()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGTERM and asserts pgcdc exits 0 within `deadline` (a clean shutdown).
    pub async fn stop_cleanly(&mut self, deadline: Duration) {
        self.terminate();
        let status = self.wait_exit(deadline).await;
        if !status.success() {
            self.output_shown = true;
            panic!(
                "pgcdc exited with {status} after SIGTERM:\n{}",
                self.output_text()
            );
        }
    }

    /// Waits until pgcdc's output (stdout or stderr) contains `needle`; panics with the output
    /// (and whether the process exited) if `deadline` passes first.
    pub async fn wait_output(&mut self, needle: &str, deadline: Duration) {
        let what = format!("pgcdc output to contain {needle:?}");
        let stdout = self.stdout.clone();
        let stderr = self.stderr.clone();
        wait_until(&what, deadline, || {
            let (stdout, stderr) = (stdout.clone(), stderr.clone());
            async move {
                let text = read_lossy(&stdout) + &read_lossy(&stderr);
                if text.contains(needle) {
                    Ok(())
                } else {
                    Err(format!("output so far:\n{text}"))
                }
            }
        })
        .await;
    }

    /// Whether pgcdc's output comes to contain `needle` within `within`; for paced loads that
    /// stop as soon as pgcdc reacts.
    pub async fn output_within(&self, needle: &str, within: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.output_text().contains(needle) {
                return true;
            }
            if started.elapsed() >= within {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL.min(within - started.elapsed())).await;
        }
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// stdout and stderr, headed, for assertion messages.
    pub fn output_text(&self) -> String {
        let status = match self.exited {
            Some(status) => format!("exited: {status}"),
            None => "still running".to_owned(),
        };
        format!(
            "--- pid {} ({status}) stdout ---\n{}\n--- stderr ---\n{}",
            self.pid(),
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Pgcdc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
        if std::thread::panicking() && !self.output_shown {
            eprintln!("{}", self.output_text());
        }
    }
}

/// Runs a one-shot `pgcdc <args>` (`check`, `slot status`, `--help`, ...) to completion, stdin
/// closed, and returns its output.
pub fn pgcdc_output<I, S>(args: I, envs: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(PGCDC_BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {PGCDC_BIN}: {e}"))
}

/// Peak resident memory of a running process (VmHWM from /proc), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
