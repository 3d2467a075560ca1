//! Validated configuration.
//!
//! Configuration is read in two stages, as ripgrep does with its flags: the TOML file, the
//! `PGCDC_<SECTION>_<KEY>` environment variables and the command-line flags are merged into one
//! raw table of strings, then validated into [`Config`], whose fields are already the types the
//! rest of pgcdc works with (`Duration`, byte counts, a parsed connection config, a sink target).
//! Nothing past this module sees a raw string it has to re-check.
//!
//! Precedence: flags > environment > file > defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Sections that environment variables may override. Other `PGCDC_*` variables (such as
/// `PGCDC_CONFIG` or `PGCDC_LOG`) belong to the command line, not to the file.
const SECTIONS: &[&str] = &["source", "sink", "batch", "metrics"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid value for {key} ({origin}): {message}")]
    Value {
        key: String,
        origin: String,
        message: String,
    },
}

/// The fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub batch: BatchConfig,
    pub metrics: MetricsConfig,
}

#[derive(Clone)]
pub struct SourceConfig {
    /// Parsed libpq-style connection settings; holds the password, so it is never printed.
    pub connect: tokio_postgres::Config,
    pub slot: SlotName,
    pub publication: String,
    /// How often a standby status update is sent even when nothing changed. PostgreSQL drops a
    /// walsender that hears nothing for `wal_sender_timeout` (60 s by default).
    pub status_interval: Duration,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redacted_target(&self.connect))
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("status_interval", &self.status_interval)
            .finish()
    }
}

/// `user@host:port/db`, the part of a connection string that is safe to print.
pub fn redacted_target(connect: &tokio_postgres::Config) -> String {
    let host = connect
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = connect.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        connect.get_user().unwrap_or(""),
        host,
        port,
        connect
            .get_dbname()
            .or(connect.get_user())
            .unwrap_or_default()
    )
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub target: SinkTarget,
}

/// Where change files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// A local directory (`file:///path`).
    Local(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// A file is closed at the latest this long after its first change.
    pub window: Duration,
    /// A file is closed at the first commit after it reaches this size; a single transaction
    /// larger than this is split into numbered parts.
    pub max_file_bytes: u64,
    pub format: FileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    CsvGz,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::CsvGz => "csv.gz",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// A replication slot name as PostgreSQL accepts it: lower-case letters, digits and underscores,
/// at most 63 bytes. Checked here so a typo fails at start-up, not at CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotName(String);

impl SlotName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SlotName {
    type Err = String;

    fn from_str(s: &str) -> Result<SlotName, String> {
        let valid = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(SlotName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid slot name: use 1-63 lower-case letters, digits or underscores"
            ))
        }
    }
}

/// Values given on the command line, the highest-precedence layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub values: Vec<(String, String)>,
}

impl Overrides {
    pub fn set(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.values.push((key.to_owned(), value.to_owned()));
        }
    }
}

/// Where a raw value came from, so an error can tell the user which knob to turn.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Env(String),
    Flag,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::Flag => f.write_str("from the command line"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Raw `section.key` → (value, origin) table, before validation.
#[derive(Debug, Default)]
struct RawTable(BTreeMap<String, (String, Origin)>);

impl RawTable {
    fn insert(&mut self, key: String, value: String, origin: Origin) {
        self.0.insert(key, (value, origin));
    }

    fn take(&mut self, key: &str) -> Option<(String, Origin)> {
        self.0.remove(key)
    }

    fn take_or(&mut self, key: &str, default: &str) -> (String, Origin) {
        self.take(key)
            .unwrap_or_else(|| (default.to_owned(), Origin::Default))
    }

    fn require(&mut self, key: &str) -> Result<(String, Origin), ConfigError> {
        self.take(key).ok_or_else(|| {
            let env = format!("PGCDC_{}", key.replace('.', "_").to_uppercase());
            let (section, name) = key.split_once('.').unwrap_or(("", key));
            ConfigError::Invalid(format!(
                "{key} is required: set `{name} = ...` in the [{section}] section of the config file, or {env}"
            ))
        })
    }
}

/// Shape of the TOML file. Unknown sections and keys are rejected so a typo is not silently
/// ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    source: Option<FileSource>,
    #[serde(default)]
    sink: Option<FileSink>,
    #[serde(default)]
    batch: Option<FileBatch>,
    #[serde(default)]
    metrics: Option<FileMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    url: Option<String>,
    slot: Option<String>,
    publication: Option<String>,
    status_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBatch {
    window: Option<String>,
    max_file_bytes: Option<toml::Value>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: Option<String>,
}

impl Config {
    /// Loads the file (if any), applies the environment and the flag overrides, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawTable::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            read_file(&text, path, &mut raw)?;
        }
        let mut pgpassword = None;
        for (name, value) in env {
            if name == "PGPASSWORD" {
                pgpassword = Some(value);
                continue;
            }
            let Some(rest) = name.strip_prefix("PGCDC_") else {
                continue;
            };
            let lower = rest.to_lowercase();
            let Some((section, key)) = lower.split_once('_') else {
                continue;
            };
            if SECTIONS.contains(&section) {
                raw.insert(format!("{section}.{key}"), value, Origin::Env(name));
            }
        }
        for (key, value) in &overrides.values {
            raw.insert(key.clone(), value.clone(), Origin::Flag);
        }
        validate(raw, pgpassword)
    }
}

fn read_file(text: &str, path: &Path, raw: &mut RawTable) -> Result<(), ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })?;
    let origin = || Origin::File(path.to_owned());
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            raw.insert(key.to_owned(), value, origin());
        }
    };
    if let Some(s) = file.source {
        put("source.url", s.url);
        put("source.slot", s.slot);
        put("source.publication", s.publication);
        put("source.status_interval", s.status_interval);
    }
    if let Some(s) = file.sink {
        put("sink.url", s.url);
    }
    if let Some(b) = file.batch {
        put("batch.window", b.window);
        // Sizes may be written as a bare integer (bytes) or a string ("128MiB").
        put(
            "batch.max_file_bytes",
            b.max_file_bytes.map(|v| match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            }),
        );
        put("batch.format", b.format);
    }
    if let Some(m) = file.metrics {
        put("metrics.listen", m.listen);
    }
    Ok(())
}

fn value_error(key: &str, origin: &Origin, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        origin: origin.to_string(),
        message: message.into(),
    }
}

fn parse_duration(key: &str, (value, origin): (String, Origin)) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(&value).map_err(|e| {
        value_error(
            key,
            &origin,
            format!("{value:?} is not a duration ({e}); write it like \"30s\" or \"5m\""),
        )
    })?;
    if d.is_zero() {
        return Err(value_error(key, &origin, "must be greater than zero"));
    }
    Ok(d)
}

fn validate(mut raw: RawTable, pgpassword: Option<String>) -> Result<Config, ConfigError> {
    let (url, url_origin) = raw.require("source.url")?;
    let mut connect = tokio_postgres::Config::from_str(&url).map_err(|e| {
        // The message of tokio-postgres never echoes the password back.
        value_error(
            "source.url",
            &url_origin,
            format!(
                "not a valid PostgreSQL connection string ({e}); expected postgres://user@host:5432/dbname"
            ),
        )
    })?;
    if connect.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".to_owned());
        connect.user(&user);
    }
    if connect.get_password().is_none()
        && let Some(pw) = pgpassword
    {
        connect.password(pw);
    }
    if connect.get_hosts().is_empty() {
        connect.host("localhost");
    }
    if matches!(
        connect.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    ) {
        return Err(value_error(
            "source.url",
            &url_origin,
            "sslmode=require is not supported yet: use sslmode=disable or prefer (connections are made without TLS)",
        ));
    }

    let (slot, origin) = raw.take_or("source.slot", "pgcdc");
    let slot = slot
        .parse::<SlotName>()
        .map_err(|m| value_error("source.slot", &origin, m))?;
    let (publication, origin) = raw.take_or("source.publication", "pgcdc_pub");
    if publication.is_empty() || publication.len() > 63 || publication.contains('\0') {
        return Err(value_error(
            "source.publication",
            &origin,
            "must be a publication name of 1-63 bytes",
        ));
    }
    let status_interval = parse_duration(
        "source.status_interval",
        raw.take_or("source.status_interval", "10s"),
    )?;

    let (sink_url, origin) = raw.require("sink.url")?;
    let target = parse_sink_url(&sink_url).map_err(|m| value_error("sink.url", &origin, m))?;

    let window = parse_duration("batch.window", raw.take_or("batch.window", "60s"))?;
    let (size, origin) = raw.take_or("batch.max_file_bytes", "128MiB");
    let max_file_bytes = size
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| {
            value_error(
                "batch.max_file_bytes",
                &origin,
                format!("{size:?} is not a size ({e}); write it like \"128MiB\""),
            )
        })?
        .as_u64();
    if max_file_bytes < 1024 {
        return Err(value_error(
            "batch.max_file_bytes",
            &origin,
            "must be at least 1KiB",
        ));
    }
    let (format, origin) = raw.take_or("batch.format", "csv.gz");
    let format = match format.as_str() {
        "csv" => FileFormat::Csv,
        "csv.gz" => FileFormat::CsvGz,
        other => {
            return Err(value_error(
                "batch.format",
                &origin,
                format!("{other:?} is not a file format: use \"csv.gz\" or \"csv\""),
            ));
        }
    };

    let (listen, origin) = raw.take_or("metrics.listen", "127.0.0.1:9464");
    let listen = listen.parse::<SocketAddr>().map_err(|_| {
        value_error(
            "metrics.listen",
            &origin,
            format!("{listen:?} is not an address: write it like \"127.0.0.1:9464\""),
        )
    })?;

    // Anything left over came from the environment or a flag and names no known key.
    if let Some((key, (_, origin))) = raw.0.into_iter().next() {
        return Err(ConfigError::Invalid(format!(
            "unknown setting {key} ({origin}); known settings are source.url, source.slot, source.publication, source.status_interval, sink.url, batch.window, batch.max_file_bytes, batch.format, metrics.listen"
        )));
    }

    Ok(Config {
        source: SourceConfig {
            connect,
            slot,
            publication,
            status_interval,
        },
        sink: SinkConfig { target },
        batch: BatchConfig {
            window,
            max_file_bytes,
            format,
        },
        metrics: MetricsConfig { listen },
    })
}

fn parse_sink_url(url: &str) -> Result<SinkTarget, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{url:?} must be an absolute path: file:///var/lib/pgcdc/stage"
            ));
        }
        return Ok(SinkTarget::Local(PathBuf::from(path)));
    }
    if url.starts_with("s3://") {
        return Err(format!(
            "{url:?}: the S3 sink is not available in this build yet; use file:///path"
        ));
    }
    Err(format!(
        "{url:?} is not a sink URL: use file:///absolute/path"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgcdc.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env, &Overrides::default())
    }

    const FULL: &str = r#"
[source]
url = "postgres://pgcdc:hunter2@db:5432/shop"
slot = "pgcdc"
publication = "pgcdc_pub"
[sink]
url = "file:///var/lib/pgcdc/stage"
[batch]
window = "60s"
max_file_bytes = "128MiB"
format = "csv.gz"
[metrics]
listen = "127.0.0.1:9464"
"#;

    #[test]
    fn reads_the_documented_example() {
        let config = load(FULL, &[]).unwrap();
        assert_eq!(config.source.slot.as_str(), "pgcdc");
        assert_eq!(config.source.publication, "pgcdc_pub");
        assert_eq!(config.batch.window, Duration::from_secs(60));
        assert_eq!(config.batch.max_file_bytes, 128 * 1024 * 1024);
        assert_eq!(config.batch.format, FileFormat::CsvGz);
        assert_eq!(
            config.sink.target,
            SinkTarget::Local(PathBuf::from("/var/lib/pgcdc/stage"))
        );
        assert_eq!(config.source.connect.get_password(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let config = load(
            FULL,
            &[
                ("PGCDC_BATCH_WINDOW", "5s"),
                ("PGCDC_BATCH_MAX_FILE_BYTES", "1MiB"),
                ("PGCDC_CONFIG", "/ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(config.batch.window, Duration::from_secs(5));
        assert_eq!(config.batch.max_file_bytes, 1024 * 1024);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, FULL).unwrap();
        let mut flags = Overrides::default();
        flags.set("batch.window", Some("7s"));
        let env = vec![("PGCDC_BATCH_WINDOW".to_owned(), "5s".to_owned())];
        let config = Config::load(Some(&path), env, &flags).unwrap();
        assert_eq!(config.batch.window, Duration::from_secs(7));
    }

    #[test]
    fn password_from_pgpassword_when_url_has_none() {
        let text = FULL.replace("pgcdc:hunter2@", "pgcdc@");
        let config = load(&text, &[("PGPASSWORD", "s3cret")]).unwrap();
        assert_eq!(config.source.connect.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn errors_name_the_key_and_never_the_password() {
        // (text to replace, replacement, environment)
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("window = \"60s\"", "window = \"sixty\"", &[]),
            ("format = \"csv.gz\"", "format = \"parquet\"", &[]),
            ("slot = \"pgcdc\"", "slot = \"Bad-Slot\"", &[]),
            (
                "max_file_bytes = \"128MiB\"",
                "max_file_bytes = \"lots\"",
                &[],
            ),
            (
                "url = \"file:///var/lib/pgcdc/stage\"",
                "url = \"ftp://x\"",
                &[],
            ),
            ("listen = \"127.0.0.1:9464\"", "listen = \"nowhere\"", &[]),
            ("[batch]", "[batch]\nwindoww = \"1s\"", &[]),
            ("", "", &[("PGCDC_SOURCE_SLOTT", "x")]),
        ];
        for (from, to, env) in cases {
            let text = FULL.replacen(from, to, 1);
            let err = load(&text, env).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "secret leaked: {err}");
            assert!(
                err.contains("window")
                    || err.contains("format")
                    || err.contains("slot")
                    || err.contains("max_file_bytes")
                    || err.contains("sink.url")
                    || err.contains("listen"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_url_says_how_to_set_it() {
        let err = load("[sink]\nurl = \"file:///tmp/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.url is required"), "{err}");
        assert!(err.contains("PGCDC_SOURCE_URL"), "{err}");
    }

    #[test]
    fn redacted_target_has_no_password() {
        let config = load(FULL, &[]).unwrap();
        let shown = format!("{:?}", config.source);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("pgcdc@db:5432/shop"), "{shown}");
    }
}
