//! A real S3-compatible server for tests: moto's server mode (installed by
//! `scripts/install-deps.sh` into the project's Python venv), on a free port of 127.0.0.1.
//!
//! [`Outage`] sits between pgcdc and the server as a TCP forwarder that can be taken down and
//! brought back on the same port: connections are refused while it is down, exactly what a
//! client sees when S3 is unreachable, and moto (which keeps objects in memory) keeps its data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

use super::config::free_port;
use super::wait::wait_until;

pub const ACCESS_KEY: &str = "pgcdc-test-access-key";
pub const SECRET_KEY: &str = "pgcdc-test-secret-key-do-not-print";
pub const REGION: &str = "us-east-1";

/// The moto_server executable: `PGCDC_MOTO_SERVER`, the project venv, or PATH.
fn moto_server_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PGCDC_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let venv = Path::new(&home).join(".cache/pgcdc/venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

pub struct MotoServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    pub async fn start() -> MotoServer {
        MotoServer::start_with(&[]).await
    }

    /// `envs` e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to make moto check credentials.
    pub async fn start_with(envs: &[(&str, &str)]) -> MotoServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let port = free_port();
        let out = std::fs::File::create(&log).expect("moto log");
        let bin = moto_server_bin();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", "65536")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run `make test` (or scripts/install-deps.sh) to install moto",
                    bin.display()
                )
            });
        let server = MotoServer {
            child,
            port,
            log,
            _dir: dir,
        };
        wait_port("moto_server accepts connections", port, true).await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        client_for(&self.endpoint())
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e:?}"));
    }

    /// Every key under `prefix`, with its ETag.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        let client = self.client();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e:?}"));
            for object in page.contents() {
                out.push((
                    object.key().unwrap_or_default().to_owned(),
                    object.e_tag().unwrap_or_default().to_owned(),
                ));
            }
            match page.next_continuation_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        out
    }

    /// Copies every object under `prefix/` into `dir`, keyed by its path below the prefix, so
    /// the local-file replay helpers can read what pgcdc uploaded.
    pub async fn download(&self, bucket: &str, prefix: &str, dir: &Path) {
        let client = self.client();
        let _ = std::fs::remove_dir_all(dir);
        let full_prefix = format!("{prefix}/");
        for (key, _) in self.list(bucket, &full_prefix).await {
            let relative = key.strip_prefix(&full_prefix).unwrap_or(&key);
            let path = dir.join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            let body = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
                .body
                .collect()
                .await
                .expect("object body")
                .into_bytes();
            std::fs::write(&path, &body).expect("write download");
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 client for the test's own checks (path-style, fixed test credentials).
pub fn client_for(endpoint: &str) -> Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .build();
    Client::from_conf(config)
}

/// The environment pgcdc needs to reach a test S3 server through the standard AWS chain.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// A TCP forwarder to `upstream` that can be taken down (connections refused, open ones cut)
/// and brought back on the same port.
pub struct Outage {
    port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Outage {
    pub async fn start(upstream: u16) -> Outage {
        let port = free_port();
        let (up, up_rx) = watch::channel(true);
        let task = tokio::spawn(forward(port, upstream, up_rx));
        wait_port("the outage proxy listens", port, true).await;
        Outage { port, up, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// S3 becomes unreachable: new connections are refused, open ones are closed.
    pub async fn take_down(&self) {
        let _ = self.up.send(false);
        wait_port("the outage proxy refuses connections", self.port, false).await;
    }

    pub async fn bring_back(&self) {
        let _ = self.up.send(true);
        wait_port(
            "the outage proxy accepts connections again",
            self.port,
            true,
        )
        .await;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until a TCP connect to `port` succeeds (`open`) or is refused (`!open`).
async fn wait_port(what: &str, port: u16, open: bool) {
    wait_until(what, Duration::from_secs(30), || async move {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok() == open
    })
    .await;
}

async fn forward(port: u16, upstream: u16, mut up: watch::Receiver<bool>) {
    loop {
        if !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
            continue;
        }
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break listener,
                // The old socket may linger for a moment after a take-down.
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { continue };
                    connections.lock().await.spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
                changed = up.changed() => {
                    if changed.is_err() || !*up.borrow() {
                        connections.lock().await.abort_all();
                        break;
                    }
                }
            }
        }
        drop(listener);
    }
}

/// Calls an SQS action on moto with the JSON protocol. moto routes a request to a service by
/// the credential scope of its Authorization header and does not check the signature.
pub async fn sqs(port: u16, action: &str, body: serde_json::Value) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/{REGION}/sqs/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.{action}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to moto");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send SQS request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read SQS response");
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "SQS {action} failed: {text}"
    );
    serde_json::from_str(payload.trim()).unwrap_or_else(|e| panic!("SQS {action}: {e}: {payload}"))
}

/// Decodes the percent-encoding S3 applies to object keys in event notifications.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
