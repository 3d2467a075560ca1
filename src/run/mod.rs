//! `pgcdc run`: wires source → pgoutput → changes → batch → sink → checkpoint.
//!
//! The pipeline runs on a blocking thread of its own (decoding, CSV encoding, compression and
//! fsyncs are CPU and disk work), while the replication socket lives on its own async task. The
//! pipeline waits for events, the window deadline or shutdown with `Handle::block_on`.
//!
//! The files, by job:
//! - `mod.rs`: the reconnect loop and one connection's life (start-up, then streaming);
//! - [`startup`]: reconciling slot, checkpoint and sink before streaming;
//! - [`copy`]: every copy of existing rows, in one folder: chunked beside the stream (first
//!   copies, `pgcdc snapshot`, tables that join the publication, partitioned roots), the first
//!   start's exported snapshot, and whole-table copies in the background (PostgreSQL 13, tables
//!   without a key);
//! - [`catalog`]: what the stream never says (tables that joined without a change, partitions
//!   attached, detached or truncated), read from the catalog now and then;
//! - [`pipeline`]: the event loop, transactions into windows;
//! - [`publish`]: closed windows into the sink, on a thread of their own;
//! - [`ack`]: the acknowledgement rule (pure, unit-tested): what may be reported as flushed;
//! - [`error`]: why it stopped, and whether a reconnect may cure it.
//!
//! `run` is the top of the library: it may import every stage; no stage imports it.

mod ack;
mod catalog;
mod copy;
mod error;
mod journal;
mod keys;
mod pipeline;
mod publish;
mod retry;
mod startup;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use error::{Durable, RunError};

use crate::backoff::Backoff;
use crate::config::{Config, Messages};
use crate::lsn::Lsn;
use crate::metrics;
use crate::source::{SourceError, StallPolicy, Stream, slot};
use crate::streamed::StreamedTxns;

/// Events buffered between the socket task and the pipeline.
const CHANNEL_CAPACITY: usize = 4096;

/// Runs until `shutdown` fires (then closes the window, makes it durable and returns Ok) or an
/// error stops the pipeline. Once streaming worked, a lost connection or a restarting server is
/// ridden out: pgcdc reconnects with capped backoff and resumes from the checkpoint, dropping the
/// window it had not made durable (the server sends those transactions again).
pub fn run(
    config: &Config,
    handle: &Handle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut streamed_before = false;
    let mut repeats = retry::Repeats::default();
    loop {
        let mut streamed = false;
        let acknowledged = metrics::get().acknowledged_lsn.get();
        let error = match run_once(config, handle, shutdown.clone(), &mut streamed) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        streamed_before |= streamed;
        // Stopping while the sink was away is a failure to report, not one to ride out: the
        // open window was not made durable.
        if !streamed_before || !error.is_transient() || *shutdown.borrow() {
            return Err(error);
        }
        let progressed = metrics::get().acknowledged_lsn.get() > acknowledged;
        let tries = repeats.record(&error, progressed);
        metrics::get().repeated_failures.set(i64::from(tries));
        if tries >= config.source.max_retries {
            return Err(RunError::GaveUp {
                tries,
                source: Box::new(error),
            });
        }
        // Only a connection that made something durable starts the backoff over: one that
        // streamed and failed straight away (a busy server) must not retry at full speed.
        if progressed {
            backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        }
        let delay = backoff.next_delay();
        warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "Replication interrupted; reconnecting");
        metrics::get().reconnects.inc();
        let stop = handle.block_on(async {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => true,
                _ = tokio::time::sleep(delay) => false,
            }
        });
        if stop {
            info!("Shutdown requested while reconnecting; everything durable is checkpointed");
            return Ok(());
        }
    }
}

fn run_once(
    config: &Config,
    handle: &Handle,
    shutdown: watch::Receiver<bool>,
    streamed: &mut bool,
) -> Result<(), RunError> {
    let slot_name = config.source.slot.as_str();
    let sink = startup::open_sink(config, handle, &shutdown)?;
    let sink = sink.as_ref();
    let journal = journal::Journal::new(slot_name);
    let started = startup::start(config, handle, sink, &journal)?;
    let version = started.server_version;
    // Messages always (from PostgreSQL 14): chunked copies and `pgcdc snapshot` talk to the
    // pipeline through them. Only `messages = "write"` writes other messages to files.
    let protocol = slot::Protocol::negotiate(version, config.source.streaming, true);
    info!(
        server_version = version,
        proto_version = protocol.version,
        streaming = protocol.streaming,
        messages = protocol.messages,
        "Chose the pgoutput protocol"
    );
    if config.source.messages == Messages::Write && !protocol.messages {
        // Not an error: the rows still flow; only the `_messages` folder stays empty.
        warn!(
            server_version = version,
            "messages = \"write\" needs PostgreSQL 14 or later; this server sends no logical \
             decoding messages, so none are written"
        );
    }
    let command = slot::start_replication_command(
        slot_name,
        &config.source.publications,
        Lsn::ZERO,
        protocol,
    );
    let write_messages = config.source.messages == Messages::Write;
    let streamed_txns = StreamedTxns::open(sink.spool_dir().join("streams"), write_messages)
        .map_err(|source| RunError::Spool {
            dir: sink.spool_dir().join("streams").display().to_string(),
            source,
        })?;
    let flush_lsn = started.checkpoint.flush_lsn;
    let commit_lsn = started.checkpoint.commit_lsn;
    let stream = handle
        .block_on(Stream::start(
            started.conn,
            &command,
            flush_lsn,
            config.source.status_interval,
            StallPolicy {
                timeout: config.source.stall_timeout,
            },
            CHANNEL_CAPACITY,
        ))
        .map_err(|e| match e {
            // object_not_in_prerequisite_state: "can no longer get changes from replication slot"
            SourceError::Server(err) if err.code == "55000" => RunError::SlotInvalidated {
                slot: slot_name.to_owned(),
                reason: err.message,
                durable: error::Durable(Some(flush_lsn)),
            },
            other => RunError::Source(other),
        })?;
    *streamed = true;
    metrics::live().streaming.store(true, Ordering::Relaxed);
    info!(
        slot = slot_name,
        publication = %config.source.publications,
        checkpoint = %commit_lsn,
        "Streaming changes"
    );

    let result = pipeline::run(
        config,
        handle,
        sink,
        pipeline::Parts {
            checkpoint: started.checkpoint,
            batcher: started.batcher,
            added: started.added,
            uncovered: started.uncovered,
            chunked: protocol.messages,
            durable: started.durable,
            schemas: started.schemas,
            streamed: streamed_txns,
        },
        &journal,
        stream,
        shutdown,
    );
    let live = metrics::live();
    live.streaming.store(false, Ordering::Relaxed);
    live.window_opened_us.store(0, Ordering::Relaxed);
    if let Err(e) = &result {
        debug!(error = %e, "Pipeline stopped");
        metrics::get().errors.with_label_values(&[e.kind()]).inc();
    }
    result
}
