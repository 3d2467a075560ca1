//! The faults a torture leg injects, and a seeded schedule of them.
//!
//! A fault is applied, held for its span while the supervisor keeps pgcdc running, then undone.
//! The file-system faults need a file system of their own: [`Tmpfs`] mounts one (root only), so
//! filling it up cannot touch anything else on the machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::StopMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL pgcdc at an arbitrary point.
    Kill,
    /// The S3 endpoint refuses connections (open ones are cut) for this long.
    S3Outage(Duration),
    /// `pg_ctl restart -m fast|immediate`.
    PgRestart(StopMode),
    /// `pg_terminate_backend` on every pgcdc connection: the network cut from the server's side.
    TerminateBackend,
    /// The file system holding the spool directory has no free byte for this long.
    DiskFull(Duration),
    /// The sink directory cannot be written for this long.
    ReadOnlySink(Duration),
}

impl Fault {
    /// A short name for the summary.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 pgcdc",
            Fault::S3Outage(_) => "S3 down",
            Fault::PgRestart(StopMode::Fast) => "PostgreSQL restart (fast)",
            Fault::PgRestart(StopMode::Immediate) => "PostgreSQL restart (immediate)",
            Fault::TerminateBackend => "pg_terminate_backend",
            Fault::DiskFull(_) => "spool disk full",
            Fault::ReadOnlySink(_) => "sink read-only",
        }
    }
}

/// How many of each fault a leg injects.
#[derive(Clone, Debug, Default)]
pub struct Mix {
    pub kills: usize,
    pub s3_outage: Option<Duration>,
    pub pg_restarts: Vec<StopMode>,
    pub terminates: usize,
    pub disk_full: Option<Duration>,
    pub read_only_sink: Option<Duration>,
}

impl Mix {
    pub fn needs_tmpfs(&self) -> bool {
        self.disk_full.is_some()
    }
}

/// The faults of `mix` in a seeded random order, each with the quiet time that precedes it.
pub fn schedule(mix: &Mix, rng: &mut fastrand::Rng) -> Vec<(Duration, Fault)> {
    let mut faults = vec![Fault::Kill; mix.kills];
    faults.extend(mix.s3_outage.map(Fault::S3Outage));
    faults.extend(mix.pg_restarts.iter().map(|m| Fault::PgRestart(*m)));
    faults.extend(std::iter::repeat_n(Fault::TerminateBackend, mix.terminates));
    faults.extend(mix.disk_full.map(Fault::DiskFull));
    faults.extend(mix.read_only_sink.map(Fault::ReadOnlySink));
    rng.shuffle(&mut faults);
    faults
        .into_iter()
        .map(|fault| (Duration::from_millis(rng.u64(300..3_000)), fault))
        .collect()
}

/// A tmpfs mounted for the length of a leg.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("creating the mount point");
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path));
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

pub fn is_root() -> bool {
    crate::common::cluster::effective_uid() == 0
}

/// Fills the file system under `dir` to the last byte; returns the filler file to delete.
pub fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("torture-filler");
    let mut file = std::fs::File::create(&path).expect("creating the filler file");
    let chunk = vec![0x5a_u8; 1 << 20];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(
                e.raw_os_error(),
                Some(28),
                "filling {} stopped with {e}, not ENOSPC",
                dir.display()
            );
            break;
        }
    }
    // Whatever a smaller write can still take.
    while file.write_all(&[0x5a; 512]).is_ok() {}
    path
}

/// Makes every directory under `root` unwritable (0555) and returns them, to restore with
/// [`make_writable`].
pub fn make_read_only(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    collect_dirs(root, &mut dirs);
    for dir in &dirs {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555));
    }
    dirs
}

pub fn make_writable(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a setup command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_holds_every_fault_of_the_mix_once_and_depends_only_on_the_seed() {
        let mix = Mix {
            kills: 5,
            s3_outage: Some(Duration::from_secs(60)),
            pg_restarts: vec![StopMode::Fast, StopMode::Immediate],
            terminates: 2,
            disk_full: Some(Duration::from_secs(5)),
            read_only_sink: None,
        };
        let a = schedule(&mix, &mut fastrand::Rng::with_seed(7));
        let b = schedule(&mix, &mut fastrand::Rng::with_seed(7));
        assert_eq!(a, b);
        assert_eq!(a.len(), 11);
        assert_eq!(a.iter().filter(|(_, f)| *f == Fault::Kill).count(), 5);
        assert!(
            a.iter()
                .any(|(_, f)| matches!(f, Fault::PgRestart(StopMode::Immediate)))
        );
    }
}
