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

use std::sync::Arc;

use crate::changes::{Assembler, Change, ChangeRow, Op, Table};
use crate::encode as csv;
use crate::lsn::Lsn;
use crate::pgoutput::{Begin, Message, Xid};

/// Spool files of the streamed transactions not yet committed or aborted.
pub struct StreamedTxns {
    dir: PathBuf,
    write_messages: bool,
    open: HashMap<Xid, TxnSpool>,
    /// The transaction whose block is being received (between Stream Start and Stream Stop).
    current: Option<Xid>,
}

struct TxnSpool {
    /// What decoding the transaction's messages needs.
    txn: StreamedTxn,
    path: PathBuf,
    writer: BufWriter<File>,
    len: u64,
    /// Where each subtransaction's first change starts, in stream order.
    subxacts: Vec<(Xid, u64)>,
}

impl StreamedTxns {
    /// Uses `dir` (created if missing) and removes what an earlier run left there: the server
    /// streams those transactions again from their start.
    /// `write_messages`: logical decoding messages become `_messages` rows.
    pub fn open(dir: PathBuf, write_messages: bool) -> io::Result<StreamedTxns> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(StreamedTxns {
            dir,
            write_messages,
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
                    txn: StreamedTxn::new(xid, self.write_messages),
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

    /// The decoding state of the transaction whose block is being received.
    pub fn current_txn(&mut self) -> Option<&mut StreamedTxn> {
        let xid = self.current?;
        self.open.get_mut(&xid).map(|spool| &mut spool.txn)
    }

    /// Spools the rows among `changes` (decoded from one message of the current block);
    /// `subxid` is the xid the message carried.
    pub fn spool_rows(
        &mut self,
        subxid: Option<Xid>,
        changes: &[Change],
        record: &mut Vec<u8>,
    ) -> io::Result<()> {
        let (xid, spool) = self.current_spool()?;
        for change in changes {
            if let Change::Row(row) = change {
                spool.txn.encode(row, record);
                spool.append(xid, subxid, record)?;
            }
        }
        Ok(())
    }

    /// Appends one raw record to the current block; `subxid` is the xid its message carried.
    pub fn append(&mut self, subxid: Option<Xid>, record: &[u8]) -> io::Result<()> {
        let (xid, spool) = self.current_spool()?;
        spool.append(xid, subxid, record)
    }

    fn current_spool(&mut self) -> io::Result<(Xid, &mut TxnSpool)> {
        let Some(xid) = self.current else {
            return Err(io::Error::other(
                "a streamed change arrived outside Stream Start/Stop",
            ));
        };
        match self.open.get_mut(&xid) {
            Some(spool) => Ok((xid, spool)),
            None => Err(io::Error::other("the streamed transaction has no spool")),
        }
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

    /// Stream Commit: the transaction's decoding state and its records, in order, read back from
    /// its spool file (which is removed once the reader is dropped). `None` if nothing of it was
    /// streamed.
    pub fn commit(&mut self, xid: Xid) -> io::Result<Option<(StreamedTxn, Replay)>> {
        if self.current == Some(xid) {
            self.current = None;
        }
        let Some(spool) = self.open.remove(&xid) else {
            return Ok(None);
        };
        let file = spool.writer.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        let reader = BufReader::with_capacity(256 * 1024, File::open(&spool.path)?);
        Ok(Some((
            spool.txn,
            Replay {
                path: spool.path,
                reader,
            },
        )))
    }
}

impl TxnSpool {
    fn append(&mut self, xid: Xid, subxid: Option<Xid>, record: &[u8]) -> io::Result<()> {
        let subxid = subxid.unwrap_or(xid);
        if subxid != xid && !self.subxacts.iter().any(|&(s, _)| s == subxid) {
            self.subxacts.push((subxid, self.len));
        }
        let len = u32::try_from(record.len())
            .map_err(|_| io::Error::other("a streamed record is larger than 4 GiB"))?;
        self.writer.write_all(&len.to_le_bytes())?;
        self.writer.write_all(record)?;
        self.len += 4 + u64::from(len);
        Ok(())
    }
}

/// A streamed transaction being received: it has an assembler of its own (pgoutput describes
/// every relation again inside each streamed transaction, and a transaction that aborts must not
/// leave its descriptions behind), and the tables its spool records refer to by index.
pub struct StreamedTxn {
    pub assembler: Assembler,
    tables: Vec<Arc<Table>>,
}

impl StreamedTxn {
    fn new(xid: Xid, write_messages: bool) -> StreamedTxn {
        let mut assembler = Assembler::new(write_messages);
        // The commit LSN and time are only known at Stream Commit; rows are spooled without them.
        let mut ignored = Vec::new();
        let _ = assembler.apply(
            Message::Begin(Begin {
                final_lsn: Lsn::ZERO,
                commit_ts: 0,
                xid,
            }),
            &mut ignored,
        );
        StreamedTxn {
            assembler,
            tables: Vec::new(),
        }
    }

    /// A spool record: table index (u32), op code, `_seq` (u64), then the line after the
    /// metadata columns.
    pub fn encode(&mut self, row: &ChangeRow, record: &mut Vec<u8>) {
        let index = match self.tables.iter().rposition(|t| Arc::ptr_eq(t, &row.table)) {
            Some(i) => i,
            None => {
                self.tables.push(row.table.clone());
                self.tables.len() - 1
            }
        };
        record.clear();
        record.extend_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes());
        record.push(row.op.code().as_bytes().first().copied().unwrap_or(b'?'));
        record.extend_from_slice(&row.seq.to_le_bytes());
        csv::encode_unchanged_and_fields(record, row);
    }

    pub fn decode<'r>(&self, record: &'r [u8]) -> Option<(Arc<Table>, Op, u64, &'r [u8])> {
        let index = u32::from_le_bytes(record.get(0..4)?.try_into().ok()?);
        let op = Op::from_code(*record.get(4)?)?;
        let seq = u64::from_le_bytes(record.get(5..13)?.try_into().ok()?);
        let table = self.tables.get(usize::try_from(index).ok()?)?.clone();
        Some((table, op, seq, record.get(13..)?))
    }
}

/// Reads a committed transaction's records back; deletes the spool file when dropped.
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
        let (_, mut replay) = txns.commit(xid).unwrap().unwrap();
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
        let mut t = StreamedTxns::open(dir.path().join("streams"), false).unwrap();
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
        let mut t = StreamedTxns::open(dir.path().to_owned(), false).unwrap();
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
        let mut t = StreamedTxns::open(dir.path().to_owned(), false).unwrap();
        assert!(t.append(Some(1), b"x").is_err());
        t.abort(5, 5).unwrap();
        assert!(t.commit(5).unwrap().is_none());
    }
}
