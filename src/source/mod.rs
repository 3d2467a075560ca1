//! The only module that holds a replication socket.
//!
//! `conn` speaks the wire protocol, `slot` runs the replication commands that manage a slot, and
//! `stream` owns the socket once START_REPLICATION succeeded: it answers keepalives and sends
//! standby status updates on its own task, so a slow file write can never get pgcdc dropped by
//! `wal_sender_timeout`. It reports `write_lsn` as data arrives; `flush_lsn` only ever comes from
//! the checkpoint, through [`stream::Feedback`].

pub mod conn;
pub mod frame;
pub mod slot;
pub mod stall;
pub mod stream;
pub mod tls;

pub use conn::{Connection, ServerError};
pub use stall::{Stall, StallPolicy};
pub use stream::{Feedback, SourceEvent, Stream};

use tokio_postgres::tls::MakeTlsConnect;

use crate::config::SourceConfig;

/// A tokio-postgres connection over the source's TLS settings; spawn it next to its client.
pub type SqlConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// An ordinary SQL connection (copies, point reads, slot queries, `check`) with the same URL,
/// TLS and session settings as the replication connection: the one way pgcdc opens one.
///
/// The settings go in the startup packet (`options`), after any the URL brings, so they win
/// over the database's and the role's (`ALTER DATABASE … SET TimeZone`): a value read by a copy
/// prints exactly as the stream prints it, and a key matches across the two.
pub async fn sql_connect(
    source: &SourceConfig,
) -> Result<(tokio_postgres::Client, SqlConnection), tokio_postgres::Error> {
    with_session_settings(&source.connect)
        .connect(source.tls.sql_connector())
        .await
}

/// `config` with [`conn::SESSION_SETTINGS`] appended to its `options` (`-c name=value`; the
/// last of a name wins, so ours do).
fn with_session_settings(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut options = config.get_options().unwrap_or_default().to_owned();
    for (name, value) in conn::SESSION_SETTINGS {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    }
    let mut config = config.clone();
    config.options(&options);
    config
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot connect to PostgreSQL at {target}: {source}; check that the server is running and that host and port in source.url are right"
    )]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error(
        "authentication as {target} failed: {message}; check the user and password (source.url or PGPASSWORD) and pg_hba.conf (the role needs a `replication` entry)"
    )]
    Auth { target: String, message: String },
    #[error("PostgreSQL reported {0}")]
    Server(ServerError),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("malformed replication frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("replication connection failed: {0}")]
    Io(std::io::Error),
    #[error(
        "TLS to PostgreSQL at {target} failed: {source}; check sslmode and sslrootcert in source.url"
    )]
    Tls {
        target: String,
        source: tls::NegotiateError,
    },
    #[error(
        "{target} is a standby (read-only) and source.url asks for target_session_attrs=read-write"
    )]
    NotPrimary { target: String },
    #[error(
        "no host in source.url ({target}) took a read-write replication connection: {tried}; check that one of them is up and is the primary (after a failover, that the standby was promoted)"
    )]
    NoUsableHost { target: String, tried: String },
    #[error("the server closed the replication connection")]
    Closed,
    #[error(
        "{0}: pgcdc closed the replication connection so the server is never held by it (a checkpoint, max_slot_wal_keep_size and pg_terminate_backend must always be able to act); it reconnects, from the checkpoint, once the sink answers"
    )]
    Stalled(stall::Stall),
    #[error("{0}")]
    Prerequisite(String),
}

impl SourceError {
    /// Whether reconnecting may cure it: the connection dropped, the server is restarting or
    /// shutting down (SQLSTATE class 57), a connection exception (class 08), or the slot is
    /// still held by our own previous, not yet terminated walsender (55006).
    pub fn is_transient(&self) -> bool {
        self.is_unreachable() || self.code() == Some("55006")
    }

    /// Whether the server could not be reached or went away (down, restarting, a standby, the
    /// network), or pgcdc gave the connection up itself: waiting cures it, not a fix.
    pub fn is_unreachable(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::Io(_)
            | SourceError::Closed
            | SourceError::Stalled(_)
            | SourceError::NotPrimary { .. }
            | SourceError::NoUsableHost { .. } => true,
            SourceError::Server(e) => e.code.starts_with("57") || e.code.starts_with("08"),
            _ => false,
        }
    }

    /// Whether, with several hosts in the URL, the next one should be tried (libpq's rule): yes
    /// for a host that is down, restarting or a standby; no for a refused password or
    /// certificate, which the next host would refuse too.
    pub(crate) fn another_host_may_do(&self) -> bool {
        match self {
            SourceError::Auth { .. } | SourceError::Tls { .. } => false,
            other => other.is_transient(),
        }
    }

    /// The SQLSTATE of a server-reported error.
    pub fn code(&self) -> Option<&str> {
        match self {
            SourceError::Server(e) => Some(e.code.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_connections_carry_the_session_settings_after_the_users_options() {
        let mut user: tokio_postgres::Config = "host=db user=u dbname=d".parse().unwrap();
        user.options("-c statement_timeout=0 -c TimeZone=Asia/Kolkata");
        let config = with_session_settings(&user);
        let options = config.get_options().unwrap();
        assert!(options.starts_with("-c statement_timeout=0 -c TimeZone=Asia/Kolkata "));
        // Later -c of a name wins: ours come last.
        assert!(options.ends_with("-c lc_monetary=C"), "{options}");
        for (name, value) in conn::SESSION_SETTINGS {
            assert!(options.contains(&format!("-c {name}={value}")), "{options}");
        }
        // Nothing else of the user's config is lost.
        assert_eq!(config.get_dbname(), Some("d"));
    }

    fn server(code: &str) -> SourceError {
        SourceError::Server(ServerError {
            severity: "FATAL".to_owned(),
            code: code.to_owned(),
            message: String::new(),
            detail: None,
            hint: None,
        })
    }

    #[test]
    fn the_next_host_is_tried_for_a_down_or_standby_host_only() {
        let refused = SourceError::Connect {
            target: "u@a:5432/d".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let standby = SourceError::NotPrimary {
            target: "u@b:5432/d".to_owned(),
        };
        assert!(refused.another_host_may_do());
        assert!(standby.another_host_may_do());
        // "the database system is starting up" / "shutting down"
        assert!(server("57P03").another_host_may_do());
        // A wrong password or a missing database would be the same on the next host.
        let auth = SourceError::Auth {
            target: "u@a:5432/d".to_owned(),
            message: "password authentication failed".to_owned(),
        };
        assert!(!auth.another_host_may_do());
        assert!(!server("3D000").another_host_may_do());
    }
}
