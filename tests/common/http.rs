//! A minimal HTTP GET for pgcdc's metrics listener (`/metrics`, `/healthz`, `/readyz`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` on `addr` (`127.0.0.1:port`): the status code and the body, or `None` when
/// nothing answers (pgcdc not listening yet).
pub async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The value of the first sample of `name` (any labels) in a Prometheus text exposition.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        line.rsplit(' ').next()?.parse().ok()
    })
}

/// The sum of every sample of `name` (all label values), for a counter whose series exist at 0
/// for every kind: the first sample alone would be whichever kind sorts first.
pub fn total(metrics: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            line.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until the share `at` of a chunked copy's chunks is placed (pgcdc's metrics at
/// `addr`); returns the chunks placed and planned.
pub async fn copy_chunks_placed(addr: &str, at: f64, deadline: std::time::Duration) -> (f64, f64) {
    super::wait_until(
        "part of the copy's chunks placed",
        deadline,
        || async move {
            let (_, body) = get(addr, "/metrics").await?;
            let done = sample(&body, "pgcdc_copy_chunks_done")?;
            let chunks = sample(&body, "pgcdc_copy_chunks")?;
            (chunks > 0.0 && done >= at * chunks).then_some((done, chunks))
        },
    )
    .await
}
