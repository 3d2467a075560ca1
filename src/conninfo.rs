//! libpq connection terms, as users write them in connection strings copied from psql:
//! `sslmode`, `sslrootcert`, host lists and their ports, and the printable (password-free) form
//! of a target. Pure: the bottom layer that both [`crate::config`] (parsing) and
//! [`crate::source`] (connecting) use; it imports neither.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres, which knows only disable/prefer/require, is told: the certificate
    /// checks of the verify modes live in our rustls configuration.
    pub fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported: use prefer (TLS when the server offers it) or disable"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "unknown sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// `sslrootcert=<path>`: a PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

/// `sslmode` and `sslrootcert` as written in a connection string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or `key=value` form) and
/// returns the rest, for tokio-postgres, which rejects `verify-ca`, `verify-full` and
/// `sslrootcert`. Values are returned as written (percent-decoded in a URL).
pub fn take_tls_params(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut keep = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => params.sslmode = Some(value),
            "sslrootcert" => params.sslrootcert = Some(value),
            _ => return true,
        }
        false
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), params);
        };
        let rest: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(
                    key,
                    percent_encoding::percent_decode_str(value)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
            .collect();
        let rebuilt = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        return (rebuilt, params);
    }
    let mut rest = Vec::new();
    for (key, value, text) in key_value_pairs(url) {
        if keep(&key, value) {
            rest.push(text);
        }
    }
    (rest.join(" "), params)
}

/// `key = value` pairs of a libpq keyword/value string, with each pair's original text. Values
/// may be single-quoted with `\'` and `\\` escapes.
fn key_value_pairs(text: &str) -> Vec<(String, String, &str)> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            let mut chunk = i;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    value.push_str(&text[chunk..i]);
                    chunk = i + 1;
                    i += 1;
                }
                i += 1;
            }
            value.push_str(&text[chunk..i.min(bytes.len())]);
            i = (i + 1).min(bytes.len());
        } else {
            let chunk = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&text[chunk..i]);
        }
        pairs.push((key, value, &text[start..i]));
    }
    pairs
}

/// `user@host:port/db` (`user@a:5432,b:5432/db` for several hosts), the part of a connection
/// string that is safe to print.
pub fn redacted_target(connect: &tokio_postgres::Config) -> String {
    let hosts = (0..connect.get_hosts().len().max(1))
        .map(|i| host_and_port(connect, i))
        .collect::<Vec<_>>()
        .join(",");
    with_user_and_db(connect, &hosts)
}

/// `user@host:port/db` of host number `index`, for errors about that one host.
pub fn host_target(connect: &tokio_postgres::Config, index: usize) -> String {
    with_user_and_db(connect, &host_and_port(connect, index))
}

/// The port of host number `index`: its own, the only one given, or 5432 (libpq's rules).
pub fn host_port(connect: &tokio_postgres::Config, index: usize) -> u16 {
    let ports = connect.get_ports();
    ports
        .get(index)
        .or_else(|| ports.first())
        .copied()
        .unwrap_or(5432)
}

fn host_and_port(connect: &tokio_postgres::Config, index: usize) -> String {
    let host = connect
        .get_hosts()
        .get(index)
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", host_port(connect, index))
}

fn with_user_and_db(connect: &tokio_postgres::Config, hosts: &str) -> String {
    format!(
        "{}@{hosts}/{}",
        connect.get_user().unwrap_or(""),
        connect
            .get_dbname()
            .or(connect.get_user())
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_leave_the_url_and_the_rest_stays() {
        let (rest, params) = take_tls_params(
            "postgres://u:p@db:5432/shop?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@db:5432/shop?connect_timeout=5");
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/ca.pem"));

        let (rest, params) = take_tls_params("postgres://db/shop?sslmode=require");
        assert_eq!(rest, "postgres://db/shop");
        assert_eq!(params.sslmode.as_deref(), Some("require"));

        let (rest, params) = take_tls_params(
            "host=db sslmode = verify-ca sslrootcert='/my certs/ca.pem' dbname=shop",
        );
        assert_eq!(rest, "host=db dbname=shop");
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/my certs/ca.pem"));
    }

    #[test]
    fn sslmode_parses_libpq_names_and_explains_the_rest() {
        assert_eq!("verify-full".parse::<SslMode>(), Ok(SslMode::VerifyFull));
        assert_eq!("disable".parse::<SslMode>(), Ok(SslMode::Disable));
        let err = "verify_full".parse::<SslMode>().unwrap_err();
        assert!(err.contains("verify-ca"), "{err}");
        assert!("allow".parse::<SslMode>().unwrap_err().contains("prefer"));
    }
}
