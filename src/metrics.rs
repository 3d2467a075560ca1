//! Every metric pgcdc exports, registered in one place, and the HTTP listener that serves them.
//!
//! Names follow Prometheus conventions: `pgcdc_` prefix, base units, `_total` for counters.
//! Labels take bounded values only (table names, op codes), never an LSN or an object key.

use std::net::SocketAddr;
use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Metrics {
    pub registry: Registry,
    pub rows: IntCounterVec,
    pub transactions: IntCounter,
    pub files: IntCounterVec,
    pub bytes: IntCounterVec,
    pub checkpoint_lsn: IntGauge,
    pub received_lsn: IntGauge,
    pub sink_errors: IntCounterVec,
    pub reconnects: IntCounter,
    pub upload_seconds: Histogram,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let rows = IntCounterVec::new(
        Opts::new("pgcdc_rows_total", "Change rows written, by table and op"),
        &["table", "op"],
    )?;
    let transactions = IntCounter::new(
        "pgcdc_transactions_total",
        "Transactions received from the server",
    )?;
    let files = IntCounterVec::new(
        Opts::new("pgcdc_files_written_total", "Change files made durable"),
        &["table"],
    )?;
    let bytes = IntCounterVec::new(
        Opts::new(
            "pgcdc_bytes_written_total",
            "Bytes of change files made durable",
        ),
        &["table"],
    )?;
    let checkpoint_lsn = IntGauge::new(
        "pgcdc_checkpoint_lsn",
        "Flush LSN of the last checkpoint, as an integer",
    )?;
    let received_lsn = IntGauge::new(
        "pgcdc_received_lsn",
        "Start LSN of the last message received, as an integer",
    )?;
    let sink_errors = IntCounterVec::new(
        Opts::new(
            "pgcdc_sink_errors_total",
            "Failed sink requests, by kind (timeout, connection, throttled, server, permanent)",
        ),
        &["kind"],
    )?;
    let upload_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "pgcdc_upload_duration_seconds",
            "Time to make one file durable in the sink, retries included",
        )
        .buckets(vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
    )?;
    let reconnects = IntCounter::new(
        "pgcdc_reconnects_total",
        "Times the replication connection was re-established after an interruption",
    )?;
    registry.register(Box::new(reconnects.clone()))?;
    registry.register(Box::new(sink_errors.clone()))?;
    registry.register(Box::new(upload_seconds.clone()))?;
    registry.register(Box::new(rows.clone()))?;
    registry.register(Box::new(transactions.clone()))?;
    registry.register(Box::new(files.clone()))?;
    registry.register(Box::new(bytes.clone()))?;
    registry.register(Box::new(checkpoint_lsn.clone()))?;
    registry.register(Box::new(received_lsn.clone()))?;
    Ok(Metrics {
        registry,
        rows,
        transactions,
        files,
        bytes,
        checkpoint_lsn,
        received_lsn,
        sink_errors,
        reconnects,
        upload_seconds,
    })
}

/// The process-wide metrics. Registration of these fixed, distinct names cannot fail; if it
/// ever did, that is a programming error caught by the first test that touches metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    #[allow(clippy::expect_used)]
    METRICS.get_or_init(|| build().expect("metric names are valid and unique"))
}

/// An LSN as a gauge value (LSNs stay far below 2^63 in practice).
pub fn lsn_value(lsn: crate::lsn::Lsn) -> i64 {
    i64::try_from(lsn.as_u64()).unwrap_or(i64::MAX)
}

pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug in `build`.
    let _ = TextEncoder::new().encode(&get().registry.gather(), &mut out);
    out
}

/// Binds the listener now, so a taken port fails start-up with a clear error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/healthz` until the process ends. A deliberately tiny HTTP/1.1
/// responder: one request per connection, no keep-alive, which is all a scraper needs.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match socket.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let request = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
                "/healthz" => ("200 OK", "text/plain", b"ok\n".to_vec()),
                _ => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
            let _ = socket.shutdown().await;
        });
    }
}
