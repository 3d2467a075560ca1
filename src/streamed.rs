//! In-progress transactions that PostgreSQL streams before they commit (pgoutput protocol 2).
//!
//! With `streaming 'on'` the server sends a large transaction in blocks (Stream Start … Stream
//! Stop) as soon as it outgrows `logical_decoding_work_mem`, interleaved with other transactions,
//! and says only later whether it committed or aborted. Nothing of it may reach a change file
//! before Stream Commit, and memory must not grow with its size, so its rows go to a spool file of
//! its own per top-level xid: already decoded and CSV-encoded as they arrive (the work overlaps
//! with the server's sending), missing only what the commit tells (commit LSN and time). Stream
//! Commit reads the records back into the window, in commit order; Stream Abort deletes the file,
//! or cuts it back to where an aborted subtransaction began.
//!
//! Cutting back is sound because a session writes sequentially: every change streamed after a
//! subtransaction's first change, up to its abort, belongs to it or to subtransactions nested in
//! it, which abort with it. PostgreSQL's own apply worker relies on the same fact.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::pgoutput::Xid;

/// Spool files of the streamed transactions not yet committed or aborted.
#[derive(Debug)]
pub struct StreamedTxns {
    dir: PathBuf,
    open: HashMap<Xid, TxnSpool>,
    /// The transaction whose block is being received (between Stream Start and Stream Stop).
    current: Option<Xid>,
}

#[derive(Debug)]
struct TxnSpool {
    path: PathBuf,
    writer: BufWriter<File>,
    len: u64,
    /// Where each subtransaction's first change starts, in stream order.
    subxacts: Vec<(Xid, u64)>,
}

impl StreamedTxns {
    /// Uses `dir` (created if missing) and removes what an earlier run left there: the server
    /// streams those transactions again from their start.
    pub fn open(dir: PathBuf) -> io::Result<StreamedTxns> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(StreamedTxns {
            dir,
            open: HashMap::new(),
            current: None,
        })
    }

    /// The transaction of the block being received, if inside one.
    pub fn current(&self) -> Option<Xid> {
        self.current
    }

    /// Transactions streamed but not yet decided.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Stream Start.
    pub fn start(&mut self, xid: Xid, first_segment: bool) -> io::Result<()> {
        if first_segment || !self.open.contains_key(&xid) {
            // A first segment for an xid already open can only mean the server started over.
            if let Some(old) = self.open.remove(&xid) {
                remove(&old.path)?;
            }
            let path = self.dir.join(format!("{xid}.stream"));
            let file = File::create(&path)?;
            self.open.insert(
                xid,
                TxnSpool {
                    path,
                    writer: BufWriter::with_capacity(256 * 1024, file),
                    len: 0,
                    subxacts: Vec::new(),
                },
            );
        }
        self.current = Some(xid);
        Ok(())
    }

    /// Stream Stop.
    pub fn stop(&mut self) {
        self.current = None;
    }

    /// Appends one record of the current block; `subxid` is the xid its message carried.
    pub fn append(&mut self, subxid: Option<Xid>, message: &[u8]) -> io::Result<()> {
        let Some(xid) = self.current else {
            return Err(io::Error::other(
                "a streamed change arrived outside Stream Start/Stop",
            ));
        };
        let Some(spool) = self.open.get_mut(&xid) else {
            return Err(io::Error::other("the streamed transaction has no spool"));
        };
        let subxid = subxid.unwrap_or(xid);
        if subxid != xid && !spool.subxacts.iter().any(|&(s, _)| s == subxid) {
            spool.subxacts.push((subxid, spool.len));
        }
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::other("a streamed message is larger than 4 GiB"))?;
        spool.writer.write_all(&len.to_le_bytes())?;
        spool.writer.write_all(message)?;
        spool.len += 4 + u64::from(len);
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction.
    pub fn abort(&mut self, xid: Xid, subxid: Xid) -> io::Result<()> {
        if subxid == xid {
            if let Some(spool) = self.open.remove(&xid) {
                drop(spool.writer);
                remove(&spool.path)?;
            }
            return Ok(());
        }
        let Some(spool) = self.open.get_mut(&xid) else {
            return Ok(());
        };
        // A subtransaction that streamed nothing leaves nothing to cut.
        let Some(index) = spool.subxacts.iter().position(|&(s, _)| s == subxid) else {
            return Ok(());
        };
        let offset = spool.subxacts[index].1;
        spool.subxacts.truncate(index);
        spool.writer.flush()?;
        let file = spool.writer.get_mut();
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        spool.len = offset;
        Ok(())
    }

    /// Stream Commit: the transaction's messages, in order, read back from its spool file (which
    /// is removed once the reader is dropped). `None` if nothing of it was streamed.
    pub fn commit(&mut self, xid: Xid) -> io::Result<Option<Replay>> {
        if self.current == Some(xid) {
            self.current = None;
        }
        let Some(spool) = self.open.remove(&xid) else {
            return Ok(None);
        };
        let file = spool.writer.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        let reader = BufReader::with_capacity(256 * 1024, File::open(&spool.path)?);
        Ok(Some(Replay {
            path: spool.path,
            reader,
        }))
    }
}

/// Reads a committed transaction's messages back; deletes the spool file when dropped.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    reader: BufReader<File>,
}

impl Replay {
    /// Reads the next record into `buf` (replacing its contents); false at the end.
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        buf.clear();
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.reader.read_exact(buf)?;
        Ok(true)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(txns: &mut StreamedTxns, xid: Xid) -> Vec<Vec<u8>> {
        let mut replay = txns.commit(xid).unwrap().unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while replay.next_record(&mut buf).unwrap() {
            out.push(buf.clone());
        }
        out
    }

    #[test]
    fn interleaved_blocks_replay_per_transaction_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = StreamedTxns::open(dir.path().join("streams")).unwrap();
        t.start(10, true).unwrap();
        t.append(Some(10), b"a1").unwrap();
        t.stop();
        t.start(20, true).unwrap();
        t.append(Some(20), b"b1").unwrap();
        t.stop();
        t.start(10, false).unwrap();
        t.append(Some(10), b"a2").unwrap();
        t.stop();
        assert_eq!(t.open_count(), 2);
        assert_eq!(replayed(&mut t, 10), vec![b"a1".to_vec(), b"a2".to_vec()]);
        t.abort(20, 20).unwrap();
        assert_eq!(t.open_count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("streams"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_subtransaction_abort_cuts_back_to_its_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = StreamedTxns::open(dir.path().to_owned()).unwrap();
        t.start(1, true).unwrap();
        t.append(Some(1), b"top").unwrap();
        t.append(Some(2), b"sub2").unwrap();
        t.append(Some(3), b"nested3").unwrap();
        t.append(Some(2), b"sub2-again").unwrap();
        t.stop();
        t.start(1, false).unwrap();
        t.append(Some(4), b"sub4").unwrap();
        // ROLLBACK TO the savepoint of subtransaction 4, then of 2 (taking 3 with it).
        t.abort(1, 4).unwrap();
        t.abort(1, 3).unwrap();
        t.abort(1, 2).unwrap();
        // A subtransaction that never streamed anything.
        t.abort(1, 99).unwrap();
        t.append(Some(1), b"after").unwrap();
        t.stop();
        assert_eq!(
            replayed(&mut t, 1),
            vec![b"top".to_vec(), b"after".to_vec()]
        );
    }

    #[test]
    fn appending_outside_a_block_is_an_error_and_unknown_xids_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = StreamedTxns::open(dir.path().to_owned()).unwrap();
        assert!(t.append(Some(1), b"x").is_err());
        t.abort(5, 5).unwrap();
        assert!(t.commit(5).unwrap().is_none());
    }
}
