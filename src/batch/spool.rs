//! A change file being written: rows stream to disk as they arrive, so memory does not grow
//! with transaction size. The file is fsynced when finished; publishing it is the sink's job.
//!
//! A file can be parked (see [`super::pool`]): its encoder is finished and dropped and the file
//! closed, so a parked file costs no deflate state, no buffers and no descriptor. Rows that
//! arrive for a parked file are appended, uncompressed, to a side file (its *tail*: opened,
//! written and closed per row, so it holds no memory either). When the tail reaches
//! [`TAIL_LIMIT`] the batcher opens the file again, and the tail is compressed into it before
//! the next row; [`SpoolWriter::finish`] does the same. For gzip, each stretch between a reopen
//! and a park is a gzip member of its own: RFC 1952 (section 2.2) defines a gzip file as a series
//! of members, and gunzip, Python's `gzip`, flate2's `MultiGzDecoder`, DuckDB and Snowflake read
//! the concatenation as the one text it is. The tail is what keeps members large: a window that
//! writes more tables in turn than files may be open would otherwise reopen a file (a new member,
//! 18 bytes of framing and a fresh dictionary) for every row. The rows, and so the file's name,
//! stay the same whatever was parked when.
//!
//! Compression is the most expensive step per byte, so a gzip file that outgrows its first
//! buffer hands compression to a thread of its own: the pipeline thread keeps decoding and
//! encoding while the previous buffer is deflated. Two buffers in flight bound the memory; a
//! small file never starts a thread.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::layout::FileFormat;

/// Uncompressed bytes collected before they are deflated (inline or by the thread).
const CHUNK: usize = 256 * 1024;
/// Chunks queued for the compressor thread.
const IN_FLIGHT: usize = 2;
/// Uncompressed bytes a parked file collects in its tail before the batcher opens it again: large
/// enough that a gzip member compresses about as well as one long stream.
pub const TAIL_LIMIT: u64 = 64 * 1024;
/// The buffer in front of the file. Compressed output reaches it in pieces of flate2's 32 KiB
/// buffer, so a larger one saves few system calls and costs memory per open file.
const FILE_BUFFER: usize = 64 * 1024;

/// Counts the bytes that reach the file (after compression), which is what `max_file_bytes`
/// limits. Shared, so the pipeline sees the compressor thread's progress.
struct Counting<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type GzFile = GzEncoder<Counting<BufWriter<File>>>;

enum Encoder {
    Plain(Counting<BufWriter<File>>),
    /// Lines collect in `pending` (flate2 zero-fills its output buffer on every `write`, so
    /// feeding it one CSV line at a time spent more time in memset than in deflate); a full
    /// chunk is deflated inline until the file proves large, then by the compressor thread.
    Gzip {
        pending: Vec<u8>,
        stage: GzStage,
    },
}

enum GzStage {
    /// With the number of chunks deflated so far.
    Inline(GzFile, u32),
    Threaded {
        chunks: SyncSender<Vec<u8>>,
        /// Emptied chunks come back for reuse.
        spare: Receiver<Vec<u8>>,
        thread: JoinHandle<io::Result<GzFile>>,
    },
    /// Only while switching stages.
    Switching,
}

pub struct SpoolWriter {
    path: PathBuf,
    format: FileFormat,
    /// `None` while parked: the file is closed and its last member complete.
    encoder: Option<Encoder>,
    /// Bytes in the tail (only while parked: opening the file compresses the tail into it).
    tail: u64,
    rows: u64,
    /// Uncompressed bytes written: unlike `bytes`, a function of the rows alone.
    input: u64,
    bytes: Arc<AtomicU64>,
}

impl SpoolWriter {
    pub fn create(path: PathBuf, format: FileFormat) -> io::Result<SpoolWriter> {
        let bytes = Arc::new(AtomicU64::new(0));
        let encoder = open_encoder(File::create(&path)?, format, &bytes);
        Ok(SpoolWriter {
            path,
            format,
            encoder: Some(encoder),
            tail: 0,
            rows: 0,
            input: 0,
            bytes,
        })
    }

    /// Whether the file is open (not parked).
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.encoder.is_some()
    }

    /// Whether a row of `len` bytes fits the tail of this parked file: when not, the file should
    /// be opened (its tail compressed) before the row is written.
    pub fn tail_takes(&self, len: usize) -> bool {
        self.encoder.is_none() && self.tail + len as u64 <= TAIL_LIMIT
    }

    fn tail_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".tail");
        PathBuf::from(name)
    }

    /// Completes the current gzip member (or flushes the plain file) and closes the file, freeing
    /// its encoder and buffers. Not fsynced: [`SpoolWriter::finish`] does that once. Parking a
    /// parked file does nothing.
    pub fn park(&mut self) -> io::Result<()> {
        if let Some(encoder) = self.encoder.take() {
            let counting = finish_encoder(encoder)?;
            counting.inner.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(())
    }

    /// Opens a parked file for appending (a new gzip member) and compresses its tail into it.
    /// Opening an open file does nothing.
    pub fn open(&mut self) -> io::Result<()> {
        if self.encoder.is_some() {
            return Ok(());
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        let mut encoder = open_encoder(file, self.format, &self.bytes);
        if self.tail > 0 {
            let tail_path = self.tail_path();
            let mut tail = File::open(&tail_path)?;
            let mut piece = vec![0; FILE_BUFFER];
            loop {
                let n = tail.read(&mut piece)?;
                if n == 0 {
                    break;
                }
                encode(&mut encoder, &piece[..n])?;
            }
            drop(tail);
            std::fs::remove_file(&tail_path)?;
            self.tail = 0;
        }
        self.encoder = Some(encoder);
        Ok(())
    }

    pub fn write_header(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_all(line)
    }

    pub fn write_row(&mut self, line: &[u8]) -> io::Result<()> {
        self.rows += 1;
        self.write_all(line)
    }

    /// Writes to the open file, or to the tail of a parked one that has room for `bytes` (else
    /// the file is opened first).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.input += bytes.len() as u64;
        if self.tail_takes(bytes.len()) {
            let mut tail = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.tail_path())?;
            tail.write_all(bytes)?;
            self.tail += bytes.len() as u64;
            return Ok(());
        }
        self.open()?;
        match &mut self.encoder {
            Some(encoder) => encode(encoder, bytes),
            None => Err(io::Error::other("spool encoder lost")),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written before compression. Deterministic: the same rows give the same count
    /// whatever the compression thread's timing, which is what a split point must depend on.
    pub fn input_bytes(&self) -> u64 {
        self.input
    }

    /// Bytes on disk so far (compressed output lags the input by the two buffers in front of
    /// the file, at most a few hundred KiB), with a parked file's tail counted as it is, before
    /// compression: an estimate from above.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) + self.tail
    }

    /// Completes the file and fsyncs it. Returns its path and size.
    pub fn finish(mut self) -> io::Result<(PathBuf, u64)> {
        if self.tail > 0 {
            self.open()?;
        }
        let file = match self.encoder {
            Some(encoder) => {
                let counting = finish_encoder(encoder)?;
                counting.inner.into_inner().map_err(|e| e.into_error())?
            }
            // Parked: complete on disk but not yet synced (fsync works on a read-only handle).
            None => File::open(&self.path)?,
        };
        file.sync_all()?;
        Ok((self.path, self.bytes.load(Ordering::Relaxed)))
    }
}

/// An encoder writing to `file` (new, or opened for appending), counting into `bytes`.
fn open_encoder(file: File, format: FileFormat, bytes: &Arc<AtomicU64>) -> Encoder {
    let counting = Counting {
        inner: BufWriter::with_capacity(FILE_BUFFER, file),
        bytes: bytes.clone(),
    };
    match format {
        FileFormat::Csv => Encoder::Plain(counting),
        // The fastest level: CDC files are read once by the loader, and the walsender, not
        // the compressor, should set the pace.
        FileFormat::CsvGz => Encoder::Gzip {
            pending: Vec::new(),
            stage: GzStage::Inline(GzEncoder::new(counting, Compression::fast()), 0),
        },
    }
}

/// Writes `bytes` through the encoder (gzip collects a chunk before deflating it).
fn encode(encoder: &mut Encoder, bytes: &[u8]) -> io::Result<()> {
    match encoder {
        Encoder::Plain(w) => w.write_all(bytes),
        Encoder::Gzip { pending, stage } => {
            pending.extend_from_slice(bytes);
            if pending.len() >= CHUNK {
                deflate_chunk(pending, stage)?;
            }
            Ok(())
        }
    }
}

/// Writes what the encoder still holds and completes its gzip member; the file is not synced.
fn finish_encoder(encoder: Encoder) -> io::Result<Counting<BufWriter<File>>> {
    match encoder {
        Encoder::Plain(mut w) => {
            w.flush()?;
            Ok(w)
        }
        Encoder::Gzip { pending, stage } => {
            let mut gz = match stage {
                GzStage::Inline(gz, _) => gz,
                GzStage::Threaded { chunks, thread, .. } => {
                    drop(chunks);
                    join(thread)?
                }
                GzStage::Switching => return Err(io::Error::other("compressor lost")),
            };
            gz.write_all(&pending)?;
            let mut counting = gz.finish()?;
            counting.flush()?;
            Ok(counting)
        }
    }
}

/// Deflates the full chunk in `pending`: the first inline, the next ones on a compressor thread.
fn deflate_chunk(pending: &mut Vec<u8>, stage: &mut GzStage) -> io::Result<()> {
    match std::mem::replace(stage, GzStage::Switching) {
        GzStage::Inline(mut gz, 0) => {
            // The first chunk: most files end here, so no thread yet.
            let result = gz.write_all(pending);
            pending.clear();
            *stage = GzStage::Inline(gz, 1);
            result
        }
        GzStage::Inline(gz, _) => {
            let (chunks, incoming) = sync_channel::<Vec<u8>>(IN_FLIGHT);
            let (returned, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
            let thread = std::thread::Builder::new()
                .name("pgcdc-gzip".to_owned())
                .spawn(move || compress(gz, incoming, returned))?;
            *stage = GzStage::Threaded {
                chunks,
                spare,
                thread,
            };
            deflate_chunk(pending, stage)
        }
        GzStage::Threaded {
            chunks,
            spare,
            thread,
        } => {
            let next = spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            let full = std::mem::replace(pending, next);
            if chunks.send(full).is_err() {
                // The thread stopped on an error: it tells which.
                join(thread)?;
                return Err(io::Error::other("the compressor thread stopped"));
            }
            *stage = GzStage::Threaded {
                chunks,
                spare,
                thread,
            };
            Ok(())
        }
        GzStage::Switching => Err(io::Error::other("compressor lost")),
    }
}

fn compress(
    mut gz: GzFile,
    chunks: Receiver<Vec<u8>>,
    returned: SyncSender<Vec<u8>>,
) -> io::Result<GzFile> {
    for mut chunk in chunks {
        gz.write_all(&chunk)?;
        chunk.clear();
        let _ = returned.try_send(chunk);
    }
    Ok(gz)
}

fn join(thread: JoinHandle<io::Result<GzFile>>) -> io::Result<GzFile> {
    thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the compressor thread panicked")))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn round_trip(lines: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            SpoolWriter::create(dir.path().join("f.csv.gz"), FileFormat::CsvGz).unwrap();
        let mut expected = Vec::new();
        writer.write_header(b"h\n").unwrap();
        expected.extend_from_slice(b"h\n");
        for i in 0..lines {
            let line = format!("{i},{}\n", "x".repeat(i % 300));
            writer.write_row(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        assert_eq!(writer.rows(), lines as u64);
        let (path, bytes) = writer.finish().unwrap();
        let compressed = std::fs::read(&path).unwrap();
        assert_eq!(bytes, compressed.len() as u64);
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, expected);
    }

    #[test]
    fn small_and_large_gzip_files_round_trip() {
        // Below one chunk, one chunk inline, then the compressor thread.
        round_trip(10);
        round_trip(2_000);
        round_trip(40_000);
    }
}
