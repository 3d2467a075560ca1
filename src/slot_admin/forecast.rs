//! The invalidation forecast of `pgcdc slot status`: reads the limits the server enforces and
//! the WAL rate of the moment, and leaves the arithmetic and the words to [`slot_forecast`].
//!
//! A one-shot command has no history of WAL positions, so the rate is measured over
//! [`RATE_SAMPLE`], and only when a WAL size limit makes it matter (the other slot commands read
//! the status without the forecast, and never wait).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{SlotAdmin, SlotAdminError, SlotStatus};
use crate::lsn::Lsn;
use crate::slot_forecast::{self, Forecast, Limits, WalRate};

/// Long enough to see a steady writer, short enough for a command a person waits on.
pub const RATE_SAMPLE: Duration = Duration::from_secs(2);

/// What `slot status` says about the slot's invalidation (`invalidation` in `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Invalidation {
    #[serde(flatten)]
    pub forecast: Forecast,
    pub limits: Limits,
    /// Bytes per second over [`RATE_SAMPLE`]; absent when no WAL size limit needed it.
    pub wal_rate: Option<f64>,
    /// The forecast in words, as the human form prints it.
    pub summary: String,
}

impl SlotAdmin<'_> {
    /// [`SlotAdmin::status`] with the invalidation forecast (none for a slot that does not exist).
    pub fn status_with_forecast(&self) -> Result<SlotStatus, SlotAdminError> {
        let mut status = self.status()?;
        if status.exists {
            status.invalidation = Some(self.invalidation(&status)?);
        }
        Ok(status)
    }

    fn invalidation(&self, status: &SlotStatus) -> Result<Invalidation, SlotAdminError> {
        let sql = |what: &str| {
            let what = what.to_owned();
            move |source| SlotAdminError::Sql { what, source }
        };
        let row = self
            .handle
            .block_on(
                self.client
                    .query_one(slot_forecast::LIMITS_SQL, &[&self.slot()]),
            )
            .map_err(sql("reading idle_replication_slot_timeout"))?;
        let limits = Limits::new(status.safe_wal_size, row.get(0), row.get(1));
        let wal_rate = if limits.safe_wal_size.is_some_and(|s| s > 0) {
            let mut rate = WalRate::new(RATE_SAMPLE);
            rate.record(Instant::now(), self.current_wal_lsn()?);
            self.handle.block_on(tokio::time::sleep(RATE_SAMPLE));
            rate.record(Instant::now(), self.current_wal_lsn()?);
            rate.bytes_per_second()
        } else {
            None
        };
        let forecast = slot_forecast::forecast(&limits, wal_rate);
        Ok(Invalidation {
            summary: slot_forecast::describe(&limits, wal_rate, &forecast),
            forecast,
            limits,
            wal_rate,
        })
    }

    pub(super) fn current_wal_lsn(&self) -> Result<Lsn, SlotAdminError> {
        let text: String = self
            .handle
            .block_on(
                self.client
                    .query_one("select pg_current_wal_lsn()::text", &[]),
            )
            .map_err(|source| SlotAdminError::Sql {
                what: "reading the current WAL position".to_owned(),
                source,
            })?
            .get(0);
        Ok(text.parse().unwrap_or_default())
    }
}
