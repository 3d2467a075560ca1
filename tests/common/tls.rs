//! A throwaway certificate authority for TLS tests, made with the `openssl` command.
//!
//! The server certificate names `localhost` only (no IP address), so connecting to 127.0.0.1
//! passes `verify-ca` but fails `verify-full`, and a second, unrelated CA fails both.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A CA that signed nothing the server has.
    pub other_ca_cert: PathBuf,
    _dir: TempDir,
}

impl TestCa {
    pub fn generate() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("pgcdc-ca-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let p = |name: &str| dir.path().join(name);
        for (key, cert, subject) in [
            ("ca.key", "ca.crt", "/CN=pgcdc test CA"),
            ("other-ca.key", "other-ca.crt", "/CN=some other CA"),
        ] {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-nodes",
                    "-days",
                    "2",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-subj",
                    subject,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                ],
                &[&p(key), Path::new("-out"), &p(cert)],
            );
        }
        openssl(
            &[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ],
            &[&p("server.key"), Path::new("-out"), &p("server.csr")],
        );
        std::fs::write(
            p("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
        )
        .expect("writing the extensions file");
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial", "-in"],
            &[
                &p("server.csr"),
                Path::new("-CA"),
                &p("ca.crt"),
                Path::new("-CAkey"),
                &p("ca.key"),
                Path::new("-extfile"),
                &p("server.ext"),
                Path::new("-out"),
                &p("server.crt"),
            ],
        );
        TestCa {
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            other_ca_cert: p("other-ca.crt"),
            _dir: dir,
        }
    }
}

fn openssl(args: &[&str], paths: &[&Path]) {
    let output = Command::new("openssl")
        .args(args)
        .args(paths)
        .output()
        .expect("running openssl (Debian: apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
