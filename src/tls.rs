//! TLS to PostgreSQL with libpq's `sslmode` semantics, on rustls: the trust roots and the
//! certificate checks each mode means, built once from the configuration.
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
//! through [`crate::source::tls::negotiate`], and tokio-postgres's SQL connections through
//! [`Tls::sql_connector`]. Imports only [`crate::conninfo`]: the configuration builds it
//! without reaching into the source.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::conninfo::{RootCert, SslMode};

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

    /// The rustls configuration for the replication connection's handshake.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

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
