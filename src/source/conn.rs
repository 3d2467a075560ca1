//! A PostgreSQL connection in replication mode, built on postgres-protocol's message codecs.
//!
//! Upstream tokio-postgres cannot open a `replication=database` connection nor enter CopyBoth
//! mode, so this module speaks the frontend/backend protocol itself: startup, authentication
//! (cleartext, MD5, SCRAM-SHA-256), simple queries, and the CopyBoth sub-protocol used by
//! START_REPLICATION. It owns the socket and its read buffer (as mini-redis's `Connection` does):
//! `read_message` parses what is buffered first and reads more only when a message is incomplete,
//! which also makes it cancel-safe inside `select!`.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::SourceError;
use super::tls::{self, NegotiateError};
use crate::config::SourceConfig;
use crate::conninfo::{host_port, host_target, redacted_target};
use crate::tls::Tls;
use tokio_postgres::config::{Host, TargetSessionAttrs};

/// Anything we can speak the protocol over: a TCP or a Unix-domain socket.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// How much the socket is asked for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The CopyBothResponse tag, which postgres-protocol's backend parser does not know.
const COPY_BOTH_RESPONSE: u8 = b'W';

/// A message from the server, with CopyBothResponse added to what postgres-protocol parses.
pub enum ServerMessage {
    Known(backend::Message),
    CopyBothResponse,
}

/// An error the server reported, with the fields a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    pub(crate) fn from_fields(mut fields: backend::ErrorFields<'_>) -> ServerError {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'S' => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

/// Rows returned by a simple query, every value in text form.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row, for the one-row replies of replication commands.
    pub fn first(&self, column: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(index)?.as_deref()
    }
}

pub struct Connection {
    reader: ReadHalf<Box<dyn Transport>>,
    writer: WriteHalf<Box<dyn Transport>>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Connection {
    /// Opens a replication connection (`replication=database`) and authenticates.
    ///
    /// With several hosts (`host=a,b`), each is tried in turn, as libpq does: a host that cannot
    /// be reached, is starting up or shutting down, or (with `target_session_attrs=read-write`)
    /// is a standby, is passed over; a failed password or certificate is not, because the next
    /// host would not fix it. After a failover this finds the promoted standby.
    pub async fn connect(source: &SourceConfig) -> Result<Connection, SourceError> {
        let config = &source.connect;
        let want_primary = config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite;
        let hosts = config.get_hosts().len().max(1);
        let mut passed_over = Vec::new();
        for index in 0..hosts {
            let target = host_target(config, index);
            let attempt = async {
                let mut conn = Connection::open(source, index, &target).await?;
                if want_primary && conn.is_read_only().await? {
                    return Err(SourceError::NotPrimary {
                        target: target.clone(),
                    });
                }
                Ok(conn)
            };
            match attempt.await {
                Ok(conn) => return Ok(conn),
                Err(error) if hosts > 1 && error.another_host_may_do() => {
                    passed_over.push(error.to_string());
                }
                Err(error) => return Err(error),
            }
        }
        Err(SourceError::NoUsableHost {
            target: redacted_target(config),
            tried: passed_over.join("; "),
        })
    }

    /// One host of the URL: socket, TLS and authentication.
    async fn open(
        source: &SourceConfig,
        index: usize,
        target: &str,
    ) -> Result<Connection, SourceError> {
        let transport = open_transport(&source.connect, index, &source.tls)
            .await
            .map_err(|failure| match failure {
                OpenError::Io(source) => SourceError::Connect {
                    target: target.to_owned(),
                    source,
                },
                OpenError::Tls(source) => SourceError::Tls {
                    target: target.to_owned(),
                    source,
                },
            })?;
        let (reader, writer) = tokio::io::split(transport);
        let mut conn = Connection {
            reader,
            writer,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::new(),
        };
        conn.startup(&source.connect, target).await?;
        Ok(conn)
    }

    /// Whether the server is in recovery (a standby), where no slot can be streamed from.
    /// `SHOW` works on a replication connection on every supported version.
    async fn is_read_only(&mut self) -> Result<bool, SourceError> {
        let result = self.simple_query("SHOW transaction_read_only").await?;
        Ok(result.first("transaction_read_only") == Some("on"))
    }

    async fn startup(
        &mut self,
        config: &tokio_postgres::Config,
        target: &str,
    ) -> Result<(), SourceError> {
        let user = config.get_user().unwrap_or("postgres");
        let dbname = config.get_dbname().unwrap_or(user);
        let application_name = config.get_application_name().unwrap_or("pgcdc");
        let params = [
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application_name),
        ];
        frontend::startup_message(
            params.iter().chain(SESSION_SETTINGS).copied(),
            &mut self.write_buf,
        )
        .map_err(SourceError::Io)?;
        self.flush().await?;

        let password = config.get_password();
        let auth_failed = |message: String| SourceError::Auth {
            target: target.to_owned(),
            message,
        };
        let need_password = || {
            auth_failed(
                "the server asks for a password but none was given: put it in the URL or set PGPASSWORD"
                    .to_owned(),
            )
        };
        loop {
            match self.read_message().await? {
                ServerMessage::Known(backend::Message::AuthenticationOk) => {}
                ServerMessage::Known(backend::Message::AuthenticationCleartextPassword) => {
                    let pw = password.ok_or_else(need_password)?;
                    frontend::password_message(pw, &mut self.write_buf).map_err(SourceError::Io)?;
                    self.flush().await?;
                }
                ServerMessage::Known(backend::Message::AuthenticationMd5Password(body)) => {
                    let pw = password.ok_or_else(need_password)?;
                    let hash = md5_hash(user.as_bytes(), pw, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(SourceError::Io)?;
                    self.flush().await?;
                }
                ServerMessage::Known(backend::Message::AuthenticationSasl(body)) => {
                    let pw = password.ok_or_else(need_password)?;
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next().map_err(SourceError::Io)? {
                        scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(auth_failed(
                            "the server offers no SASL mechanism pgcdc supports (SCRAM-SHA-256)"
                                .to_owned(),
                        ));
                    }
                    self.scram(pw).await.map_err(|e| match e {
                        SourceError::Server(err) => auth_failed(err.message),
                        other => other,
                    })?;
                }
                ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                    let err = ServerError::from_fields(body.fields());
                    return Err(match err.code.as_str() {
                        // invalid_password, invalid_authorization_specification
                        "28P01" | "28000" => auth_failed(err.message),
                        _ => SourceError::Server(err),
                    });
                }
                ServerMessage::Known(backend::Message::ReadyForQuery(_)) => return Ok(()),
                ServerMessage::Known(
                    backend::Message::ParameterStatus(_)
                    | backend::Message::BackendKeyData(_)
                    | backend::Message::NoticeResponse(_),
                ) => {}
                ServerMessage::Known(_) | ServerMessage::CopyBothResponse => {
                    return Err(SourceError::Protocol(
                        "unexpected message during authentication".to_owned(),
                    ));
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), SourceError> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.write_buf)
            .map_err(SourceError::Io)?;
        self.flush().await?;
        match self.read_message().await? {
            ServerMessage::Known(backend::Message::AuthenticationSaslContinue(body)) => {
                scram.update(body.data()).map_err(SourceError::Io)?;
            }
            ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                return Err(SourceError::Server(ServerError::from_fields(body.fields())));
            }
            _ => return Err(SourceError::Protocol("unexpected SASL message".to_owned())),
        }
        frontend::sasl_response(scram.message(), &mut self.write_buf).map_err(SourceError::Io)?;
        self.flush().await?;
        match self.read_message().await? {
            ServerMessage::Known(backend::Message::AuthenticationSaslFinal(body)) => {
                scram.finish(body.data()).map_err(SourceError::Io)
            }
            ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                Err(SourceError::Server(ServerError::from_fields(body.fields())))
            }
            _ => Err(SourceError::Protocol("unexpected SASL message".to_owned())),
        }
    }

    /// Runs one replication command or SQL statement with the simple-query protocol.
    pub async fn simple_query(&mut self, query: &str) -> Result<QueryResult, SourceError> {
        frontend::query(query, &mut self.write_buf).map_err(SourceError::Io)?;
        self.flush().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.read_message().await? {
                ServerMessage::Known(backend::Message::RowDescription(body)) => {
                    result.columns = body
                        .fields()
                        .map(|f| Ok(f.name().to_owned()))
                        .collect()
                        .map_err(SourceError::Io)?;
                }
                ServerMessage::Known(backend::Message::DataRow(body)) => {
                    let buf = body.buffer();
                    let row = body
                        .ranges()
                        .map(|range| {
                            Ok(range.and_then(|r| {
                                buf.get(r).map(|b| String::from_utf8_lossy(b).into_owned())
                            }))
                        })
                        .collect()
                        .map_err(SourceError::Io)?;
                    result.rows.push(row);
                }
                ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                    error = Some(ServerError::from_fields(body.fields()));
                }
                ServerMessage::Known(backend::Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(err) => Err(SourceError::Server(err)),
                        None => Ok(result),
                    };
                }
                ServerMessage::CopyBothResponse => {
                    return Err(SourceError::Protocol(format!(
                        "{query:?} unexpectedly started a COPY"
                    )));
                }
                ServerMessage::Known(_) => {}
            }
        }
    }

    /// Sends START_REPLICATION and waits for the server to enter CopyBoth mode.
    pub async fn start_copy_both(&mut self, command: &str) -> Result<(), SourceError> {
        frontend::query(command, &mut self.write_buf).map_err(SourceError::Io)?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                ServerMessage::CopyBothResponse => return Ok(()),
                ServerMessage::Known(backend::Message::ErrorResponse(body)) => {
                    let err = ServerError::from_fields(body.fields());
                    // The server follows an error with ReadyForQuery; the connection is done
                    // anyway, so report the error without waiting for it.
                    return Err(SourceError::Server(err));
                }
                ServerMessage::Known(
                    backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_),
                ) => {}
                ServerMessage::Known(_) => {
                    return Err(SourceError::Protocol(
                        "unexpected reply to START_REPLICATION".to_owned(),
                    ));
                }
            }
        }
    }

    /// Reads the next server message, buffering partial input. Cancel-safe: bytes read are
    /// kept in `read_buf` even if the future is dropped before a whole message arrives.
    pub async fn read_message(&mut self) -> Result<ServerMessage, SourceError> {
        loop {
            if let Some(message) = self.parse_buffered()? {
                return Ok(message);
            }
            // Keep a large free tail: parsed messages are split off the front, and a small
            // tail would turn a stream of XLogData into one syscall per few hundred bytes.
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
                self.read_buf.reserve(READ_CHUNK);
            }
            let n = self
                .reader
                .read_buf(&mut self.read_buf)
                .await
                .map_err(SourceError::Io)?;
            if n == 0 {
                return Err(SourceError::Closed);
            }
        }
    }

    fn parse_buffered(&mut self) -> Result<Option<ServerMessage>, SourceError> {
        let Some(header) = backend::Header::parse(&self.read_buf).map_err(SourceError::Io)? else {
            return Ok(None);
        };
        if header.tag() == COPY_BOTH_RESPONSE {
            // Tag byte + length (which counts itself); the body (format + column formats) is
            // of no use for replication.
            let total = usize::try_from(header.len()).unwrap_or(0) + 1;
            if self.read_buf.len() < total {
                self.read_buf.reserve(total - self.read_buf.len());
                return Ok(None);
            }
            self.read_buf.advance(total);
            return Ok(Some(ServerMessage::CopyBothResponse));
        }
        let message = backend::Message::parse(&mut self.read_buf).map_err(|e| {
            SourceError::Protocol(format!("cannot parse a message from the server: {e}"))
        })?;
        Ok(message.map(ServerMessage::Known))
    }

    /// Queues one CopyData message carrying `payload`.
    pub fn queue_copy_data(&mut self, payload: Bytes) -> Result<(), SourceError> {
        frontend::CopyData::new(payload)
            .map_err(SourceError::Io)?
            .write(&mut self.write_buf);
        Ok(())
    }

    /// Queues CopyDone, which ends the replication stream cleanly.
    pub fn queue_copy_done(&mut self) {
        frontend::copy_done(&mut self.write_buf);
    }

    pub async fn flush(&mut self) -> Result<(), SourceError> {
        if !self.write_buf.is_empty() {
            self.writer
                .write_all_buf(&mut self.write_buf)
                .await
                .map_err(SourceError::Io)?;
        }
        self.writer.flush().await.map_err(SourceError::Io)
    }

    /// Ends the session politely; errors are irrelevant at this point.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

enum OpenError {
    Io(io::Error),
    Tls(NegotiateError),
}

/// Connects to host number `index` of the URL; over TCP, TLS is negotiated as `tls` says.
async fn open_transport(
    config: &tokio_postgres::Config,
    index: usize,
    tls: &Tls,
) -> Result<Box<dyn Transport>, OpenError> {
    let port = host_port(config, index);
    match config.get_hosts().get(index) {
        Some(Host::Tcp(name)) => {
            let stream = tokio::net::TcpStream::connect((name.as_str(), port))
                .await
                .map_err(OpenError::Io)?;
            stream.set_nodelay(true).map_err(OpenError::Io)?;
            tls::negotiate(stream, tls, name)
                .await
                .map_err(OpenError::Tls)
        }
        #[cfg(unix)]
        Some(Host::Unix(dir)) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(OpenError::Io)?;
            Ok(Box::new(stream))
        }
        None => Err(OpenError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no host given",
        ))),
    }
}

/// Quotes an identifier for a replication command (`"pgcdc_pub"`).
/// Session settings that fix the text form of values. pgoutput runs each column's output function
/// inside the walsender, so these decide what lands in the files; the snapshot's COPY session sets
/// the same ones, so snapshot rows and streamed rows of one value are byte-identical.
/// - UTF8, whatever the database's client default;
/// - ISO dates in UTC, so a `timestamptz` always ends in `+00` and the file never depends on the
///   server's or the role's time zone;
/// - `extra_float_digits = 3`: float values round-trip exactly on every supported version;
/// - hex `bytea`; `postgres` intervals;
/// - `lc_monetary = C`, so `money` is `$1,234.56` whatever the server locale (pgcdc writes it as
///   a plain decimal).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
];

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for a replication command (`'...'`).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("pub"), "\"pub\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("\"a'b\""), "'\"a''b\"'");
    }
}
