//! Windows on their way to durable: sealed and handed to the upload thread, the outcome applied
//! when it comes back, and what durability moves: the checkpoint (with the copies' progress)
//! and the flush position the server is told.
//!
//! Apart because the pipeline writes the checkpoint here and nowhere else: whatever moves the
//! flush position passes through this file.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::runtime::Handle;
use tracing::debug;

use super::Pipeline;
use crate::lsn::Lsn;
use crate::metrics;
use crate::pg_time;
use crate::run::ack::Position;
use crate::run::copy;
use crate::run::error::RunError;
use crate::run::journal::Entry;
use crate::run::publish::Upload;
use crate::source::Stream;

impl Pipeline<'_> {
    /// Closes the window and hands it to the upload thread. Blocks while an earlier window is
    /// still waiting behind the one uploading, which bounds the spool.
    pub(super) fn seal_and_submit(&mut self) -> Result<(), RunError> {
        let sealed = self.batcher.seal().map_err(|source| RunError::Spool {
            dir: self.sink.spool_dir().display().to_string(),
            source,
        })?;
        // A window with rows brings its opening time along: it stays the age of the oldest
        // change not yet durable until the upload is done.
        if !self.batcher_opened() {
            self.window_opened.push_back(0);
        }
        let upload = Upload {
            sealed,
            window_commits: std::mem::take(&mut self.window_commits),
            last_commit_unix_us: self.last_commit_unix_us,
            started: Instant::now(),
            progress: std::mem::take(&mut self.backfill.progress),
        };
        if self.uploads.send(upload).is_err() {
            // The upload thread stopped on an error; its report is waiting.
            while let Ok((_, result)) = self.uploaded.try_recv() {
                result?;
            }
            return Err(RunError::Spool {
                dir: self.sink.spool_dir().display().to_string(),
                source: std::io::Error::other("the upload thread stopped"),
            });
        }
        self.ack.submitted();
        Ok(())
    }

    /// Whether the open window's opening time is the last entry of `window_opened` (one entry per
    /// pending upload, then one for the open window if it has rows).
    fn batcher_opened(&self) -> bool {
        self.window_opened.len() > self.ack.uploads_pending()
    }

    /// `pgcdc_window_age_seconds` follows the oldest change not yet durable: in an upload, or in
    /// the open window.
    pub(super) fn show_window_age(&self) {
        let oldest = self.window_opened.iter().copied().find(|&t| t > 0);
        metrics::live()
            .window_opened_us
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
    }

    /// Waits for every window handed to the upload thread and applies the outcomes.
    pub(super) fn drain_uploads(
        &mut self,
        handle: &Handle,
        stream: &Stream,
    ) -> Result<(), RunError> {
        while self.ack.uploads_pending() > 0 {
            match handle.block_on(self.uploaded.recv()) {
                Some((upload, result)) => self.on_uploaded(upload, result, stream)?,
                None => {
                    return Err(RunError::Spool {
                        dir: self.sink.spool_dir().display().to_string(),
                        source: std::io::Error::other("the upload thread stopped"),
                    });
                }
            }
        }
        Ok(())
    }

    /// A window's files are durable (or failed): record it, checkpoint, acknowledge.
    pub(super) fn on_uploaded(
        &mut self,
        upload: Upload,
        result: Result<Option<Entry>, RunError>,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.ack.upload_finished();
        let entry = result?;
        self.window_opened.pop_front();
        self.show_window_age();
        let flushed = self.window_durable(upload)?;
        // The checkpoint covers the window now (it was written, or already past it).
        if let Some(entry) = entry {
            self.journal.settle(entry);
        }
        if let Some(flush) = flushed {
            stream.feedback.flushed(flush);
        }
        Ok(())
    }

    /// Records that a window's files are published; returns the new flush position.
    fn window_durable(&mut self, upload: Upload) -> Result<Option<Lsn>, RunError> {
        let Upload {
            sealed,
            window_commits,
            last_commit_unix_us,
            started,
            progress,
        } = upload;
        for p in progress {
            copy::apply(&mut self.checkpoint, p);
        }
        let m = metrics::get();
        let live = metrics::live();
        if let Some(last) = sealed.files.iter().map(|f| f.key.last).max() {
            m.written_lsn.set(metrics::lsn_value(last));
            live.caught_up_us
                .fetch_max(last_commit_unix_us, Ordering::Relaxed);
        }
        for file in &sealed.files {
            let entry = self.durable.entry(file.key.folder.clone()).or_default();
            *entry = (*entry).max(file.key.last);
        }
        let Some(position) = self.ack.window_durable(sealed.last_commit) else {
            return Ok(None);
        };
        self.save_checkpoint(position)?;
        m.flush_seconds.observe(started.elapsed().as_secs_f64());
        let now = pg_time::now_unix_micros();
        for committed in window_commits {
            m.commit_to_durable
                .observe((now - committed).max(0) as f64 / 1e6);
        }
        Ok(Some(self.checkpoint.flush_lsn))
    }

    /// With nothing buffered, everything received is durable or was never ours, so the server's
    /// position can be confirmed and the slot does not hold WAL for an idle table.
    pub(super) fn advance_idle(
        &mut self,
        wal_end: Option<Lsn>,
        force: bool,
    ) -> Result<Option<Lsn>, RunError> {
        let buffered = !self.batcher.is_empty() || self.assembler.in_transaction();
        let mut force = force;
        if !buffered && self.ack.uploads_pending() == 0 && !self.backfill.progress.is_empty() {
            // Everything written before it is durable: the copies' progress counts now.
            for p in std::mem::take(&mut self.backfill.progress) {
                copy::apply(&mut self.checkpoint, p);
            }
            force = true;
        }
        if !buffered && self.ack.uploads_pending() == 0 {
            // Nothing pending: pgcdc is caught up as of now.
            metrics::live()
                .caught_up_us
                .fetch_max(pg_time::now_unix_micros(), Ordering::Relaxed);
        }
        let Some(position) = self.ack.idle(buffered, wal_end, force, Instant::now()) else {
            return Ok(None);
        };
        self.save_checkpoint(position)?;
        Ok(Some(self.checkpoint.flush_lsn))
    }

    /// Writes the checkpoint, moved to `position` (unchanged when it is already there), but not
    /// past where a whole-table copy under way holds it.
    pub(super) fn save_checkpoint(&mut self, position: Position) -> Result<(), RunError> {
        let position = match self.added.hold() {
            Some(hold) => Position {
                commit: position.commit.min(hold.commit),
                flush: position.flush.min(hold.flush),
            },
            None => position,
        };
        self.checkpoint.advance(position.commit, position.flush);
        // Every schema file written so far, so a restart need not list the sink for them. Copied
        // only when it changed: it has an entry per table, and a window rarely adds one.
        {
            let schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
            if self.checkpoint.schemas.as_ref() != Some(schemas.by_folder()) {
                self.checkpoint.schemas = Some(schemas.by_folder().clone());
            }
        }
        self.checkpoint.save(self.sink)?;
        self.ack.saved(Instant::now());
        metrics::get()
            .acknowledged_lsn
            .set(metrics::lsn_value(self.checkpoint.flush_lsn));
        debug!(commit_lsn = %self.checkpoint.commit_lsn, flush_lsn = %self.checkpoint.flush_lsn, "Checkpoint written");
        Ok(())
    }
}
