//! The TLS step of the replication connection: libpq's SSLRequest exchange on a fresh TCP
//! connection, then the rustls handshake ([`crate::tls`]) if the server agrees.

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::Transport;
use crate::conninfo::SslMode;
use crate::tls::Tls;

/// Why the TLS step of a replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    #[error(
        "the server does not accept TLS connections, but sslmode={0} requires one: enable ssl on the server, or use sslmode=prefer or disable"
    )]
    Refused(SslMode),
    #[error("the TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
}

/// The SSLRequest exchange on a fresh TCP connection, then the handshake if the server agrees.
pub async fn negotiate(
    mut stream: TcpStream,
    tls: &Tls,
    host: &str,
) -> Result<Box<dyn Transport>, NegotiateError> {
    if tls.mode() == SslMode::Disable {
        return Ok(Box::new(stream));
    }
    let mut request = bytes::BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut request);
    stream
        .write_all(&request)
        .await
        .map_err(NegotiateError::Io)?;
    let mut answer = [0_u8; 1];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(NegotiateError::Io)?;
    match answer[0] {
        b'S' => {}
        b'N' if tls.mode() == SslMode::Prefer => return Ok(Box::new(stream)),
        b'N' => return Err(NegotiateError::Refused(tls.mode())),
        other => {
            return Err(NegotiateError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected answer {other:#04x} to the TLS request"),
            )));
        }
    }
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        NegotiateError::Handshake(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.client_config());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(NegotiateError::Handshake)?;
    Ok(Box::new(stream))
}
