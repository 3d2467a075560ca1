//! A change file being written: rows stream to disk as they arrive, so memory does not grow
//! with transaction size. The file is fsynced when finished; publishing it is the sink's job.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::FileFormat;

/// Counts the bytes that reach the file (after compression), which is what `max_file_bytes`
/// limits.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder {
    Plain(Counting<BufWriter<File>>),
    /// The outer buffer matters: flate2 zero-fills its output buffer on every `write`, so
    /// feeding it one CSV line at a time spent more time in memset than in deflate.
    Gzip(BufWriter<GzEncoder<Counting<BufWriter<File>>>>),
}

pub struct SpoolWriter {
    path: PathBuf,
    encoder: Encoder,
    rows: u64,
}

impl SpoolWriter {
    pub fn create(path: PathBuf, format: FileFormat) -> io::Result<SpoolWriter> {
        let file = BufWriter::with_capacity(256 * 1024, File::create(&path)?);
        let counting = Counting {
            inner: file,
            bytes: 0,
        };
        let encoder = match format {
            FileFormat::Csv => Encoder::Plain(counting),
            // The fastest level: CDC files are read once by the loader, and the walsender, not
            // the compressor, should set the pace.
            FileFormat::CsvGz => Encoder::Gzip(BufWriter::with_capacity(
                128 * 1024,
                GzEncoder::new(counting, Compression::fast()),
            )),
        };
        Ok(SpoolWriter {
            path,
            encoder,
            rows: 0,
        })
    }

    pub fn write_header(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_all(line)
    }

    pub fn write_row(&mut self, line: &[u8]) -> io::Result<()> {
        self.rows += 1;
        self.write_all(line)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Plain(w) => w.write_all(bytes),
            Encoder::Gzip(w) => w.write_all(bytes),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes on disk so far (compressed output lags the input by the two buffers in front of
    /// the file, at most a few hundred KiB).
    pub fn bytes(&self) -> u64 {
        match &self.encoder {
            Encoder::Plain(w) => w.bytes,
            Encoder::Gzip(w) => w.get_ref().get_ref().bytes,
        }
    }

    /// Completes the file and fsyncs it. Returns its path and size.
    pub fn finish(self) -> io::Result<(PathBuf, u64)> {
        let counting = match self.encoder {
            Encoder::Plain(w) => w,
            Encoder::Gzip(w) => w.into_inner().map_err(|e| e.into_error())?.finish()?,
        };
        let bytes = counting.bytes;
        let file = counting.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.path, bytes))
    }
}
