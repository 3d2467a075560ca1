//! The HTTP listener of `/metrics`, `/healthz` and `/readyz`: the only I/O of the metrics module.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{ready, render};

/// Binds the listener now, so a taken port fails start-up with a clear error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz` (the process is alive) and `/readyz` (streaming, lag within
/// `ready_max_lag_bytes`) until the process ends. A deliberately tiny HTTP/1.1 responder: one
/// request per connection, no keep-alive, which is all a scraper or a probe needs.
pub async fn serve(listener: TcpListener, ready_max_lag_bytes: u64) {
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
                "/readyz" if ready(ready_max_lag_bytes) => {
                    ("200 OK", "text/plain", b"ready\n".to_vec())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    b"not ready: not streaming, or lag above metrics.ready_max_lag_bytes\n"
                        .to_vec(),
                ),
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
