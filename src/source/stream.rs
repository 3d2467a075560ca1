//! The replication stream task.
//!
//! One task owns the socket from START_REPLICATION to the end. It forwards XLogData to the
//! pipeline through a bounded channel and, independently of how fast the pipeline drains it,
//! answers keepalives at once and sends a standby status update every `status_interval` and
//! whenever the flush position moves. When the channel is full the task stops reading the socket
//! (TCP backpressure slows the walsender) but keeps writing status updates, which the walsender
//! reads even while its own writes are blocked. A walsender blocked that way cannot be stopped
//! by the server, so the socket stays unread only as long as [`StallPolicy`] allows; then the
//! task closes the connection and ends with [`SourceError::Stalled`].

use std::time::Duration;

use bytes::Bytes;
use postgres_protocol::message::backend;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::SourceError;
use super::conn::{Connection, ServerError, ServerMessage};
use super::frame::{self, Frame};
use super::stall::StallPolicy;
use crate::lsn::Lsn;
use crate::metrics;

/// How often a task waiting for room in the channel asks whether it should give the
/// connection up.
const STALL_CHECK: Duration = Duration::from_millis(250);

/// How long the last words to a server that is not reading may take before the socket is
/// simply dropped.
const TERMINATE_WAIT: Duration = Duration::from_secs(1);

/// What the stream hands the pipeline, in server order.
#[derive(Debug)]
pub enum SourceEvent {
    /// One pgoutput message.
    Data { wal_start: Lsn, data: Bytes },
    /// The server's WAL position while it had nothing to send us; lets an idle slot advance.
    Keepalive { wal_end: Lsn },
}

/// The pipeline's side of the flush position: it may only move forward, and only after the
/// data up to it is durable.
#[derive(Clone)]
pub struct Feedback(watch::Sender<Lsn>);

impl Feedback {
    /// Reports `lsn` as durable. Positions behind the current one are ignored.
    pub fn flushed(&self, lsn: Lsn) {
        self.0.send_if_modified(|current| {
            if lsn > *current {
                *current = lsn;
                true
            } else {
                false
            }
        });
    }

    pub fn current(&self) -> Lsn {
        *self.0.borrow()
    }
}

/// A running stream: events to consume, feedback to give, and the task to stop.
pub struct Stream {
    pub events: mpsc::Receiver<SourceEvent>,
    pub feedback: Feedback,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Stream {
    /// Starts streaming on an authenticated replication connection.
    pub async fn start(
        mut conn: Connection,
        command: &str,
        initial_flush: Lsn,
        status_interval: Duration,
        stall: StallPolicy,
        capacity: usize,
    ) -> Result<Stream, SourceError> {
        conn.start_copy_both(command).await?;
        let (events_tx, events) = mpsc::channel(capacity);
        let (flush_tx, flush_rx) = watch::channel(initial_flush);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            conn,
            events_tx,
            flush_rx,
            stop_rx,
            status_interval,
            stall,
            initial_flush,
        ));
        Ok(Stream {
            events,
            feedback: Feedback(flush_tx),
            stop: Some(stop_tx),
            task,
        })
    }

    /// Sends a last status update with the final flush position and closes the stream.
    pub async fn stop(mut self) -> Result<(), SourceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    /// Waits for the task to end and returns why it ended; used after the event channel closed.
    pub async fn join(self) -> Result<(), SourceError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(SourceError::Protocol(format!(
                "the replication task failed: {e}"
            ))),
        }
    }
}

struct Status {
    write: Lsn,
    flush: Lsn,
}

impl Status {
    fn queue(&self, conn: &mut Connection) -> Result<(), SourceError> {
        let now = crate::pg_time::now_unix_micros();
        // write can trail flush right after start (flush comes from the checkpoint).
        let write = self.write.max(self.flush);
        conn.queue_copy_data(frame::status_update(write, self.flush, now, false))
    }
}

async fn send_status(conn: &mut Connection, status: &Status) -> Result<(), SourceError> {
    status.queue(conn)?;
    conn.flush().await
}

/// The last words of a stream: the final flush position, then CopyDone and Terminate.
async fn finish(
    mut conn: Connection,
    mut status: Status,
    flush_rx: &mut watch::Receiver<Lsn>,
) -> Result<(), SourceError> {
    status.flush = *flush_rx.borrow_and_update();
    send_status(&mut conn, &status).await?;
    conn.queue_copy_done();
    conn.terminate().await;
    Ok(())
}

async fn run(
    mut conn: Connection,
    events: mpsc::Sender<SourceEvent>,
    mut flush_rx: watch::Receiver<Lsn>,
    mut stop_rx: oneshot::Receiver<()>,
    status_interval: Duration,
    stall: StallPolicy,
    initial_flush: Lsn,
) -> Result<(), SourceError> {
    let mut status = Status {
        write: initial_flush,
        flush: initial_flush,
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + status_interval, status_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Tell the server where we stand right away: after a restart that is the checkpoint.
    send_status(&mut conn, &status).await?;

    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop_rx => return finish(conn, status, &mut flush_rx).await,
            changed = flush_rx.changed() => {
                if changed.is_err() {
                    // The pipeline is gone; nothing more will become durable.
                    conn.terminate().await;
                    return Ok(());
                }
                status.flush = *flush_rx.borrow_and_update();
                send_status(&mut conn, &status).await?;
                continue;
            }
            _ = ticker.tick() => {
                send_status(&mut conn, &status).await?;
                continue;
            }
            message = conn.read_message() => message?,
        };

        let event = match message {
            ServerMessage::Known(backend::Message::CopyData(body)) => {
                match frame::parse(body.into_bytes())? {
                    Frame::XLogData {
                        wal_start,
                        wal_end,
                        data,
                    } => {
                        status.write = status.write.max(wal_start).max(wal_end);
                        SourceEvent::Data { wal_start, data }
                    }
                    Frame::Keepalive {
                        wal_end,
                        reply_requested,
                    } => {
                        status.write = status.write.max(wal_end);
                        if reply_requested {
                            send_status(&mut conn, &status).await?;
                        }
                        // Idle hints are worth nothing when the pipeline is busy: drop them
                        // rather than wait.
                        let _ = events.try_send(SourceEvent::Keepalive { wal_end });
                        continue;
                    }
                }
            }
            ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                return Err(SourceError::Server(ServerError::from_fields(body.fields())));
            }
            ServerMessage::Known(backend::Message::CopyDone) => return Err(SourceError::Closed),
            ServerMessage::Known(_) | ServerMessage::CopyBothResponse => continue,
        };

        // Wait for room in the channel, still serving status updates while we wait, and give the
        // connection up if the pipeline takes nothing for too long.
        let unread_since = Instant::now();
        let mut stall_check = tokio::time::interval_at(unread_since + STALL_CHECK, STALL_CHECK);
        let permit = loop {
            tokio::select! {
                biased;
                permit = events.reserve() => match permit {
                    Ok(permit) => break permit,
                    Err(_) => {
                        conn.terminate().await;
                        return Ok(());
                    }
                },
                _ = &mut stop_rx => return finish(conn, status, &mut flush_rx).await,
                _ = ticker.tick() => send_status(&mut conn, &status).await?,
                changed = flush_rx.changed() => {
                    if changed.is_err() {
                        conn.terminate().await;
                        return Ok(());
                    }
                    status.flush = *flush_rx.borrow_and_update();
                    send_status(&mut conn, &status).await?;
                }
                _ = stall_check.tick() => {
                    let failing = metrics::live().sink_failing_for();
                    if let Some(stalled) = stall.verdict(unread_since.elapsed(), failing) {
                        let error = SourceError::Stalled(stalled);
                        // Said now: the pipeline reports the error only once it can move again.
                        tracing::warn!("{error}");
                        // Unread data is simply not confirmed: the server sends it again.
                        let _ = tokio::time::timeout(TERMINATE_WAIT, conn.terminate()).await;
                        return Err(error);
                    }
                }
            }
        };
        permit.send(event);
    }
}
