//! TLS to PostgreSQL with libpq's `sslmode` semantics, on rustls.
//!
//! Users copy connection strings from psql, so `sslmode` and `sslrootcert` mean what libpq says:
//!
//! | sslmode     | encrypted            | server certificate checked                      |
//! |-------------|----------------------|-------------------------------------------------|
//! | disable     | no                   | -                                               |
//! | prefer      | if the server offers | no                                              |
//! | require     | yes                  | no (yes, as verify-ca, when sslrootcert is set) |
//! | verify-ca   | yes                  | signed by the root CA                           |
//! | verify-full | yes                  | signed by the root CA and issued for the host   |
//!
//! `sslrootcert` is a PEM file of one or more CA certificates, or `system` for the operating
//! system's trust store. libpq's default (`prefer`) is kept. TLS is never used on a Unix-domain
//! socket, as in libpq.
//!
//! Both kinds of connection use the same [`Tls`]: the replication connection (our own client)
//! through [`negotiate`], and tokio-postgres's SQL connections through [`Tls::sql_connector`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::Transport;

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

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "sslmode={mode} checks the server's certificate, but no root certificate was given: add sslrootcert=/path/to/root.crt (or sslrootcert=system) to source.url, or set PGSSLROOTCERT"
    )]
    NoRootCert { mode: SslMode },
    #[error("cannot read the root certificate file {path}: {message}")]
    RootCertFile { path: String, message: String },
    #[error("the root certificate file {path} holds no usable certificate: {message}")]
    RootCertContent { path: String, message: String },
    #[error("the system trust store holds no certificate pgcdc can use")]
    NoSystemCerts,
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS side of the source connection, built once from the config.
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    /// For the replication connection's handshake.
    client: Arc<ClientConfig>,
    /// The same configuration, wrapped once for tokio-postgres.
    sql: tokio_postgres_rustls::MakeRustlsConnect,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

impl Tls {
    /// Loads the root certificates the mode needs; every failure here is a configuration error.
    pub fn new(mode: SslMode, root: Option<&RootCert>) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verify = match (mode, root) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(TlsError::NoRootCert { mode });
            }
            (SslMode::Require | SslMode::VerifyCa, Some(root)) => Verify::Ca(root),
            (SslMode::VerifyFull, Some(root)) => Verify::Full(root),
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => Verify::Nothing,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = match verify {
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            Verify::Full(root) => builder
                .with_root_certificates(load_roots(root)?)
                .with_no_client_auth(),
            Verify::Ca(root) => {
                let inner = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(load_roots(root)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostName { inner }))
                    .with_no_client_auth()
            }
        };
        let client = Arc::new(config);
        Ok(Tls {
            mode,
            sql: tokio_postgres_rustls::MakeRustlsConnect::new((*client).clone()),
            client,
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The connector for tokio-postgres's SQL connections.
    pub fn sql_connector(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        self.sql.clone()
    }
}

/// How the server's certificate is checked, with the roots it is checked against.
#[derive(Clone, Copy)]
enum Verify<'a> {
    Nothing,
    Ca(&'a RootCert),
    Full(&'a RootCert),
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemCerts);
            }
        }
        RootCert::File(path) => {
            let shown = path.display().to_string();
            let certs = read_pem_certs(path).map_err(|message| TlsError::RootCertFile {
                path: shown.clone(),
                message,
            })?;
            if certs.is_empty() {
                return Err(TlsError::RootCertContent {
                    path: shown,
                    message: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned(),
                });
            }
            for cert in certs {
                store.add(cert).map_err(|e| TlsError::RootCertContent {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    Ok(store)
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    // Read first, so a missing file says "No such file" rather than a PEM error.
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))
}

/// sslmode=prefer/require without a root: the channel is encrypted, the peer not authenticated
/// (libpq does the same). Handshake signatures are still checked, so the session keys belong to
/// whoever holds the certificate's key.
#[derive(Debug)]
struct NoCertificateCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// sslmode=verify-ca: the chain must lead to a trusted root; the name in the certificate may be
/// anything (libpq's meaning, for servers reached by an address their certificate does not name).
#[derive(Debug)]
struct AnyHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

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
    if tls.mode == SslMode::Disable {
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
        b'N' if tls.mode == SslMode::Prefer => return Ok(Box::new(stream)),
        b'N' => return Err(NegotiateError::Refused(tls.mode)),
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
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(NegotiateError::Handshake)?;
    Ok(Box::new(stream))
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

    #[test]
    fn the_verify_modes_need_a_root_certificate() {
        let err = Tls::new(SslMode::VerifyFull, None).unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        assert!(Tls::new(SslMode::Require, None).is_ok());
        assert!(Tls::new(SslMode::Prefer, None).is_ok());
    }

    #[test]
    fn a_bad_root_certificate_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = Tls::new(SslMode::VerifyCa, Some(&RootCert::File(missing.clone()))).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = Tls::new(SslMode::VerifyCa, Some(&RootCert::File(junk))).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
