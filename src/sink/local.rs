//! The local-directory sink (`file:///path`).
//!
//! Publishing is write → fsync → rename → fsync the directory: a reader sees either no file or
//! the whole file, and the rename survives a power cut. Spool files live under
//! `<root>/_pgcdc/<slot>/spool` so the rename never crosses a file system.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Sink, SinkError, SinkErrorKind};
use crate::layout::BOOKKEEPING_DIR;

pub struct LocalSink {
    root: PathBuf,
    spool: PathBuf,
}

impl LocalSink {
    /// Opens (creating if needed) the sink directory and its spool directory, and checks that
    /// both are writable, so a wrong path fails at start-up with the path in the message.
    pub fn open(root: &Path, slot: &str) -> Result<LocalSink, SinkError> {
        let spool = root.join(BOOKKEEPING_DIR).join(slot).join("spool");
        let sink = LocalSink {
            root: root.to_owned(),
            spool: spool.clone(),
        };
        create_dir_durable(&spool).map_err(|e| sink.error("create", "spool directory", e))?;
        let probe = spool.join(".write-test");
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| sink.error("write to", "spool directory", e))?;
        Ok(sink)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn error(&self, op: &'static str, key: &str, source: io::Error) -> SinkError {
        SinkError {
            kind: SinkErrorKind::Local,
            op,
            key: key.to_owned(),
            location: self.location(),
            message: source.to_string(),
        }
    }
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entry list changed.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        create_dir_durable(parent)?;
    }
    fs::rename(from, to)?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let key: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(key.join("/"));
        }
    }
    Ok(())
}

impl Sink for LocalSink {
    fn publish(&self, spool: &Path, key: &str) -> Result<(), SinkError> {
        // The spool file was fsynced by its writer; the rename makes it visible at once.
        rename_durable(spool, &self.path(key)).map_err(|e| self.error("publish", key, e))
    }

    fn list(&self) -> Result<Vec<String>, SinkError> {
        let mut keys = Vec::new();
        walk(&self.root, &self.root, &mut keys).map_err(|e| self.error("list", "", e))?;
        keys.retain(|k| !k.starts_with(&format!("{BOOKKEEPING_DIR}/")) || k.ends_with(".json"));
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<(), SinkError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, SinkError> {
        self.path(key)
            .try_exists()
            .map_err(|e| self.error("look up", key, e))
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        match fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("read", key, e)),
        }
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let tmp = self.spool.join(format!("{}.tmp", key.replace('/', "_")));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            rename_durable(&tmp, &self.path(key))
        })();
        result.map_err(|e| self.error("write", key, e))
    }

    fn spool_dir(&self) -> PathBuf {
        self.spool.clone()
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_list_read_write_delete() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(dir.path(), "pgcdc").unwrap();
        let spool = sink.spool_dir().join("a.spool");
        fs::write(&spool, b"hello").unwrap();
        sink.publish(&spool, "s.t/dt=2024-01-01/hour=00/x.csv")
            .unwrap();
        assert!(!spool.exists());
        sink.write("_pgcdc/pgcdc/checkpoint.json", b"{}").unwrap();
        assert_eq!(
            sink.list().unwrap(),
            vec![
                "_pgcdc/pgcdc/checkpoint.json".to_owned(),
                "s.t/dt=2024-01-01/hour=00/x.csv".to_owned()
            ]
        );
        assert_eq!(
            sink.read("s.t/dt=2024-01-01/hour=00/x.csv").unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(sink.read("missing").unwrap(), None);
        sink.delete("s.t/dt=2024-01-01/hour=00/x.csv").unwrap();
        sink.delete("s.t/dt=2024-01-01/hour=00/x.csv").unwrap();
        assert_eq!(sink.list().unwrap().len(), 1);
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = LocalSink::open(&file, "pgcdc").err().unwrap().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
