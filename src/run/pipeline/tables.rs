//! Which tables are copied, and when, beyond what the stream's rows say: tables that join or
//! leave the publication and partitioned roots whose partitions changed (both read from the
//! catalog, [`catalog`]), and whole-table copies made durable.
//!
//! Apart from [`super::durable`] because it decides what to copy; durable records what is
//! written and moves the checkpoint.

use tracing::info;

use super::Pipeline;
use crate::run::ack::Position;
use crate::run::catalog;
use crate::run::copy::whole::TableCopy;
use crate::run::error::RunError;
use crate::run::publish;

impl Pipeline<'_> {
    /// Copies the existing rows of a table no copy covers yet: in chunks where the server
    /// sends watermarks, else whole.
    pub(super) fn copy_existing_rows(&mut self, folder: String) {
        if self.chunked {
            self.backfill.join(&folder);
        } else {
            self.copy_whole(folder);
        }
    }

    /// What the catalog shows now: tables that joined are copied, tables that left are
    /// forgotten (joining again copies them again), and roots whose partitions changed are
    /// copied again.
    pub(super) fn on_catalog(&mut self, now: catalog::Snapshot) -> Result<(), RunError> {
        let left: Vec<String> = self
            .checkpoint
            .tables
            .iter()
            .flatten()
            .map(|(folder, _)| folder)
            .filter(|f| {
                !now.tables.contains(*f)
                    && !self.added.is_pending(f)
                    && self.backfill.copying(f).is_none()
            })
            .cloned()
            .collect();
        for folder in left {
            info!(table = %folder, "The table left the publication; if it joins again, its rows are copied again");
            self.checkpoint.uncover_table(&folder);
        }
        for folder in &now.tables {
            if !self.checkpoint.covers_table(folder)
                && !self.added.is_pending(folder)
                && self.backfill.copying(folder).is_none()
            {
                self.copy_existing_rows(folder.clone());
            }
        }
        let changed = match &self.checkpoint.partitions {
            Some(before) => catalog::changed_roots(before, &now),
            None => Vec::new(),
        };
        let seen_first = self.checkpoint.partitions.is_none();
        if self.checkpoint.partitions.as_ref() != Some(&now.partitions) {
            self.checkpoint.partitions = Some(now.partitions);
        }
        for root in &changed {
            info!(table = %root, "The table's partitions changed (attached, detached, dropped or truncated); copying it again");
            self.checkpoint.recopy.insert(root.clone());
        }
        if !changed.is_empty() || seen_first {
            // Written now: a crash or a reconnect before the copy is durable must not forget it.
            let at = self.ack.durable();
            self.save_checkpoint(at)?;
        }
        for root in changed {
            self.copy_root_again(root);
        }
        Ok(())
    }

    /// Copies root `folder` again because its partitions changed: in chunks where the server
    /// sends watermarks, else whole. The checkpoint's `recopy` holds it until that copy ends.
    pub(super) fn copy_root_again(&mut self, folder: String) {
        if self.chunked {
            self.backfill.recopy(&folder);
        } else {
            self.copy_whole(folder);
        }
    }

    /// Copies `folder` whole in an exported snapshot; the checkpoint waits for it
    /// ([`AddedTables::hold`](crate::run::copy::whole::AddedTables::hold)). Asked again while a copy
    /// of it runs, it is copied once more after that one: that copy's snapshot may predate why
    /// it was asked.
    pub(super) fn copy_whole(&mut self, folder: String) {
        let now = Position {
            commit: self.checkpoint.commit_lsn,
            flush: self.checkpoint.flush_lsn,
        };
        self.added.request(vec![folder], now);
    }

    /// Publishes the rows copied whole; from now on the stream's changes to those tables at or
    /// before the copy's LSN are skipped, as the copy holds them. The checkpoint may move again.
    pub(super) fn publish_copy(&mut self, copy: TableCopy) -> Result<(), RunError> {
        let entry = {
            let mut known = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
            publish::publish(self.sink, &copy.sealed, &mut known, self.journal)?
        };
        let again = self.added.finished(&copy.folders);
        for folder in &copy.folders {
            let entry = self.durable.entry(folder.clone()).or_default();
            *entry = (*entry).max(copy.lsn);
            self.checkpoint.cover_table(folder, copy.lsn);
            if again.contains(folder) {
                continue;
            }
            self.checkpoint.recopy.remove(folder);
            if self.backfill.whole_copy_done(folder) {
                self.checkpoint.copies.remove(folder);
            }
        }
        let at = self.ack.durable();
        self.save_checkpoint(at)?;
        if let Some(entry) = entry {
            self.journal.settle(entry);
        }
        info!(tables = ?copy.folders, rows = copy.rows, lsn = %copy.lsn, "Existing rows of new tables are durable");
        // The line a chunked copy writes when it is durable, so one line tells either way.
        for folder in &copy.folders {
            if !again.contains(folder) {
                info!(table = %folder, whole = true, "Copy of the table complete");
            }
        }
        for folder in again {
            info!(table = %folder, "Copying the table again: it was asked for while its copy ran");
            self.copy_whole(folder);
        }
        Ok(())
    }
}
