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

use crate::publication::Publications;
use crate::source::tls::{RootCert, SslMode, Tls, take_tls_params};

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
    /// `sslmode`/`sslrootcert` from the URL or PGSSLMODE/PGSSLROOTCERT, with the roots loaded.
    pub tls: Tls,
    pub slot: SlotName,
    /// One or more publications; pgoutput and the copies combine them as PostgreSQL does.
    pub publications: Publications,
    /// How often a standby status update is sent even when nothing changed. PostgreSQL drops a
    /// walsender that hears nothing for `wal_sender_timeout` (60 s by default).
    pub status_interval: Duration,
    /// When set, pgcdc emits a logical decoding message this often so the slot advances even
    /// when the database writes only outside the publication (or nothing at all).
    pub heartbeat: Option<Duration>,
    /// Whether to ask PostgreSQL 14+ to stream large in-progress transactions (pgoutput protocol
    /// 2) instead of holding them back until commit. pgcdc spools them to disk either way, so
    /// this trades server-side spill files for pgcdc-side ones and lowers commit-to-file latency.
    pub streaming: bool,
    /// What to do with `pg_logical_emit_message` messages.
    pub messages: Messages,
    /// What to do when the slot has confirmed more than pgcdc made durable.
    pub on_slot_ahead: SlotAhead,
    /// Whether the slot is a failover slot (PostgreSQL 17+): standbys with
    /// `sync_replication_slots = on` keep a copy of it, so after a promotion pgcdc carries on
    /// from the new primary instead of needing a new slot and a new snapshot.
    pub failover: bool,
}

/// What pgcdc does when the slot's confirmed position is ahead of its checkpoint: someone
/// advanced or recreated the slot, or a failover lost ground, and changes in between are not in
/// the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAhead {
    /// Refuse to start (the default): nothing is skipped silently.
    Stop,
    /// Write a gap marker (`_pgcdc/<slot>/gaps/`) and continue from the slot's position.
    Gap,
}

/// What pgcdc does with logical decoding messages (`pg_logical_emit_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messages {
    /// Not requested from the server (the default).
    Ignore,
    /// Written to the `_messages` folder, one row per message, in commit order.
    Write,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redacted_target(&self.connect))
            .field("sslmode", &self.tls.mode())
            .field("slot", &self.slot)
            .field("publication", &self.publications)
            .field("status_interval", &self.status_interval)
            .field("heartbeat", &self.heartbeat)
            .field("streaming", &self.streaming)
            .field("messages", &self.messages)
            .field("on_slot_ahead", &self.on_slot_ahead)
            .field("failover", &self.failover)
            .finish()
    }
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

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub target: SinkTarget,
}

/// Where change files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// A local directory (`file:///path`).
    Local(PathBuf),
    /// An S3 bucket and key prefix (`s3://bucket/prefix`).
    S3(S3Target),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket root.
    pub prefix: String,
    /// None: the standard region chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// None: AWS_ENDPOINT_URL if set, else AWS's own endpoint.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    /// Files at least this large are uploaded in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Where files are written before upload.
    pub spool_dir: PathBuf,
}

/// Server-side encryption requested for every object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    Aes256,
    Kms { key_id: Option<String> },
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
    /// How often the slot's figures are read from the server.
    pub poll_interval: Duration,
    /// `/readyz` fails while the replication lag exceeds this.
    pub ready_max_lag_bytes: u64,
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

/// Every setting pgcdc knows, by section. The file, the environment and the flags may only name
/// these, so a typo fails loudly instead of being ignored.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "source",
        &[
            "url",
            "slot",
            "publication",
            "status_interval",
            "heartbeat",
            "streaming",
            "messages",
            "on_slot_ahead",
            "failover",
        ],
    ),
    (
        "sink",
        &[
            "url",
            "region",
            "endpoint",
            "force_path_style",
            "storage_class",
            "sse",
            "sse_kms_key_id",
            "multipart_threshold",
            "part_size",
            "spool_dir",
        ],
    ),
    ("batch", &["window", "max_file_bytes", "format"]),
    (
        "metrics",
        &["listen", "poll_interval", "ready_max_lag_bytes"],
    ),
];

fn known_keys(section: &str) -> Option<&'static [&'static str]> {
    KNOWN
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, keys)| *keys)
}

fn unknown_key_error(key: &str, origin: &Origin) -> ConfigError {
    let (section, _) = key.split_once('.').unwrap_or((key, ""));
    let hint = match known_keys(section) {
        Some(keys) => format!(
            "the [{section}] section takes {}",
            keys.iter()
                .map(|k| format!("{section}.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "sections are {}",
            KNOWN
                .iter()
                .map(|(s, _)| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    ConfigError::Invalid(format!("unknown setting {key} ({origin}); {hint}"))
}

impl Config {
    /// Loads the file (if any), applies the environment and the flag overrides, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = path
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Config::parse(text.as_deref().zip(path), env, overrides)
    }

    /// [`Config::load`] on text already read: `file` is the TOML and the path it is named by
    /// in messages. Pure apart from reading root certificates, so fuzzers and tests can drive it.
    pub fn parse(
        file: Option<(&str, &Path)>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawTable::default();
        if let Some((text, path)) = file {
            read_file(text, path, &mut raw)?;
        }
        let mut libpq = LibpqEnv::default();
        for (name, value) in env {
            match name.as_str() {
                "PGPASSWORD" => libpq.password = Some(value),
                "PGSSLMODE" => libpq.sslmode = Some(value),
                "PGSSLROOTCERT" => libpq.sslrootcert = Some(value),
                _ => {
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
            }
        }
        for (key, value) in &overrides.values {
            raw.insert(key.clone(), value.clone(), Origin::Flag);
        }
        validate(raw, libpq)
    }
}

fn read_file(text: &str, path: &Path, raw: &mut RawTable) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.message().trim().to_owned(),
    })?;
    let origin = || Origin::File(path.to_owned());
    for (section, value) in table {
        let toml::Value::Table(entries) = value else {
            return Err(unknown_key_error(&section, &origin()));
        };
        let keys = known_keys(&section).ok_or_else(|| unknown_key_error(&section, &origin()))?;
        for (key, value) in entries {
            let full = format!("{section}.{key}");
            if !keys.contains(&key.as_str()) {
                return Err(unknown_key_error(&full, &origin()));
            }
            // Everything is validated from its text form, whatever TOML type it was written
            // in, so the file and PGCDC_* variables go through the same checks.
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                    value.to_string()
                }
                _ => {
                    return Err(value_error(
                        &full,
                        &origin(),
                        "must be a string, a number or a boolean",
                    ));
                }
            };
            raw.insert(full, text, origin());
        }
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

/// The libpq environment variables pgcdc honours, as psql does.
#[derive(Default)]
struct LibpqEnv {
    password: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn validate(mut raw: RawTable, libpq: LibpqEnv) -> Result<Config, ConfigError> {
    let (url, url_origin) = raw.require("source.url")?;
    // tokio-postgres knows neither verify-ca/verify-full nor sslrootcert: those are ours.
    let (url, tls_params) = take_tls_params(&url);
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
        && let Some(pw) = libpq.password
    {
        connect.password(pw);
    }
    if connect.get_hosts().is_empty() {
        connect.host("localhost");
    }
    let ssl_mode = match tls_params.sslmode.or(libpq.sslmode) {
        Some(mode) => mode
            .parse::<SslMode>()
            .map_err(|m| value_error("source.url", &url_origin, m))?,
        None => SslMode::Prefer,
    };
    connect.ssl_mode(ssl_mode.for_tokio_postgres());
    let root_cert = tls_params
        .sslrootcert
        .or(libpq.sslrootcert)
        .filter(|r| !r.is_empty())
        .map(|r| match r.as_str() {
            "system" => RootCert::System,
            _ => RootCert::File(PathBuf::from(r)),
        });
    let tls = Tls::new(ssl_mode, root_cert.as_ref())
        .map_err(|e| value_error("source.url", &url_origin, e.to_string()))?;

    let (slot, origin) = raw.take_or("source.slot", "pgcdc");
    let slot = slot
        .parse::<SlotName>()
        .map_err(|m| value_error("source.slot", &origin, m))?;
    let (publication, origin) = raw.take_or("source.publication", "pgcdc_pub");
    let publications = Publications::parse(&publication)
        .map_err(|m| value_error("source.publication", &origin, m))?;
    let status_interval = parse_duration(
        "source.status_interval",
        raw.take_or("source.status_interval", "10s"),
    )?;

    let heartbeat = match raw.take("source.heartbeat") {
        None => None,
        Some((value, _)) if matches!(value.trim(), "0" | "0s" | "off" | "") => None,
        Some(value) => Some(parse_duration("source.heartbeat", value)?),
    };
    let streaming = match raw.take("source.streaming") {
        None => true,
        Some(v) => parse_bool("source.streaming", v)?,
    };
    let messages = parse_choice(
        "source.messages",
        raw.take_or("source.messages", "ignore"),
        &[("ignore", Messages::Ignore), ("write", Messages::Write)],
    )?;
    let on_slot_ahead = parse_choice(
        "source.on_slot_ahead",
        raw.take_or("source.on_slot_ahead", "stop"),
        &[("stop", SlotAhead::Stop), ("gap", SlotAhead::Gap)],
    )?;
    let failover = match raw.take("source.failover") {
        None => false,
        Some(v) => parse_bool("source.failover", v)?,
    };
    let target = sink_target(&mut raw, slot.as_str())?;

    let window = parse_duration("batch.window", raw.take_or("batch.window", "60s"))?;
    let max_file_bytes = parse_size(
        "batch.max_file_bytes",
        raw.take_or("batch.max_file_bytes", "128MiB"),
    )?;
    if max_file_bytes < 1024 {
        return Err(ConfigError::Invalid(
            "batch.max_file_bytes must be at least 1KiB".to_owned(),
        ));
    }
    let format = parse_choice(
        "batch.format",
        raw.take_or("batch.format", "csv.gz"),
        &[("csv.gz", FileFormat::CsvGz), ("csv", FileFormat::Csv)],
    )?;

    let (listen, origin) = raw.take_or("metrics.listen", "127.0.0.1:9464");
    let listen = listen.parse::<SocketAddr>().map_err(|_| {
        value_error(
            "metrics.listen",
            &origin,
            format!("{listen:?} is not an address: write it like \"127.0.0.1:9464\""),
        )
    })?;

    // Anything left over came from the environment or a flag and names no known key.
    let poll_interval = parse_duration(
        "metrics.poll_interval",
        raw.take_or("metrics.poll_interval", "15s"),
    )?;
    let ready_max_lag_bytes = parse_size(
        "metrics.ready_max_lag_bytes",
        raw.take_or("metrics.ready_max_lag_bytes", "1GiB"),
    )?;
    // Those from the file were checked as it was read.
    if let Some((key, (_, origin))) = raw.0.into_iter().next() {
        return Err(unknown_key_error(&key, &origin));
    }

    Ok(Config {
        source: SourceConfig {
            connect,
            tls,
            slot,
            publications,
            status_interval,
            heartbeat,
            streaming,
            messages,
            on_slot_ahead,
            failover,
        },
        sink: SinkConfig { target },
        batch: BatchConfig {
            window,
            max_file_bytes,
            format,
        },
        metrics: MetricsConfig {
            listen,
            poll_interval,
            ready_max_lag_bytes,
        },
    })
}

fn parse_size(key: &str, (value, origin): (String, Origin)) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            value_error(
                key,
                &origin,
                format!("{value:?} is not a size ({e}); write it like \"128MiB\""),
            )
        })
}

/// One of a fixed set of words; the error lists them.
fn parse_choice<T: Copy>(
    key: &str,
    (value, origin): (String, Origin),
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let word = value.trim();
    choices
        .iter()
        .find(|(name, _)| *name == word)
        .map(|&(_, choice)| choice)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            value_error(
                key,
                &origin,
                format!("{word:?} is not a choice: use {}", names.join(" or ")),
            )
        })
}

fn parse_bool(key: &str, (value, origin): (String, Origin)) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(value_error(
            key,
            &origin,
            format!("{value:?} is not a boolean: use true or false"),
        )),
    }
}

/// Settings only an S3 sink takes; naming one with a `file://` sink is a mistake worth a word.
const S3_ONLY: &[&str] = &[
    "sink.region",
    "sink.endpoint",
    "sink.force_path_style",
    "sink.storage_class",
    "sink.sse",
    "sink.sse_kms_key_id",
    "sink.multipart_threshold",
    "sink.part_size",
    "sink.spool_dir",
];

fn sink_target(raw: &mut RawTable, slot: &str) -> Result<SinkTarget, ConfigError> {
    let (url, origin) = raw.require("sink.url")?;
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(value_error(
                "sink.url",
                &origin,
                format!("{url:?} must be an absolute path: file:///var/lib/pgcdc/stage"),
            ));
        }
        if let Some(key) = S3_ONLY.iter().find(|k| raw.0.contains_key(**k)) {
            return Err(ConfigError::Invalid(format!(
                "{key} applies to s3:// sinks only, but sink.url is {url:?}"
            )));
        }
        return Ok(SinkTarget::Local(PathBuf::from(path)));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(value_error(
            "sink.url",
            &origin,
            format!("{url:?} is not a sink URL: use file:///absolute/path or s3://bucket/prefix"),
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(value_error(
            "sink.url",
            &origin,
            format!(
                "{bucket:?} is not a valid S3 bucket name (3-63 lower-case letters, digits, '-' or '.')"
            ),
        ));
    }
    let prefix = prefix.trim_matches('/').to_owned();

    let region = raw.take("sink.region").map(|(v, _)| v);
    let endpoint = match raw.take("sink.endpoint") {
        Some((endpoint, origin)) => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(value_error(
                    "sink.endpoint",
                    &origin,
                    format!("{endpoint:?} must be an http:// or https:// URL"),
                ));
            }
            Some(endpoint)
        }
        None => None,
    };
    let force_path_style = match raw.take("sink.force_path_style") {
        Some(v) => parse_bool("sink.force_path_style", v)?,
        None => false,
    };
    let storage_class = raw.take("sink.storage_class").map(|(v, _)| v);
    let sse = match raw.take("sink.sse") {
        None => None,
        Some((value, origin)) => match value.as_str() {
            "AES256" => Some(Sse::Aes256),
            "aws:kms" => Some(Sse::Kms {
                key_id: raw.take("sink.sse_kms_key_id").map(|(v, _)| v),
            }),
            other => {
                return Err(value_error(
                    "sink.sse",
                    &origin,
                    format!(
                        "{other:?} is not a server-side encryption: use \"AES256\" or \"aws:kms\""
                    ),
                ));
            }
        },
    };
    if let Some((_, origin)) = raw.take("sink.sse_kms_key_id") {
        return Err(value_error(
            "sink.sse_kms_key_id",
            &origin,
            "needs sink.sse = \"aws:kms\"",
        ));
    }
    const MIN_PART: u64 = 5 * 1024 * 1024;
    let part_size = parse_size("sink.part_size", raw.take_or("sink.part_size", "16MiB"))?;
    if part_size < MIN_PART {
        return Err(ConfigError::Invalid(
            "sink.part_size must be at least 5MiB (the S3 minimum for multipart parts)".to_owned(),
        ));
    }
    let multipart_threshold = parse_size(
        "sink.multipart_threshold",
        raw.take_or("sink.multipart_threshold", "64MiB"),
    )?;
    let spool_dir = raw
        .take("sink.spool_dir")
        .map(|(v, _)| PathBuf::from(v))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("pgcdc-{slot}-spool")));
    Ok(SinkTarget::S3(S3Target {
        bucket: bucket.to_owned(),
        prefix,
        region,
        endpoint,
        force_path_style,
        storage_class,
        sse,
        multipart_threshold,
        part_size,
        spool_dir,
    }))
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
        assert_eq!(config.source.publications.names(), ["pgcdc_pub"]);
        assert_eq!(config.batch.window, Duration::from_secs(60));
        assert_eq!(config.batch.max_file_bytes, 128 * 1024 * 1024);
        assert_eq!(config.batch.format, FileFormat::CsvGz);
        assert_eq!(
            config.sink.target,
            SinkTarget::Local(PathBuf::from("/var/lib/pgcdc/stage"))
        );
        assert_eq!(config.source.connect.get_password(), Some(&b"hunter2"[..]));
        assert!(config.source.streaming);
        assert_eq!(config.source.messages, Messages::Ignore);
        assert_eq!(config.source.on_slot_ahead, SlotAhead::Stop);
        assert!(!config.source.failover);
    }

    #[test]
    fn change_semantics_settings() {
        let config = load(
            FULL,
            &[
                ("PGCDC_SOURCE_STREAMING", "false"),
                ("PGCDC_SOURCE_MESSAGES", "write"),
                ("PGCDC_SOURCE_ON_SLOT_AHEAD", "gap"),
                ("PGCDC_SOURCE_FAILOVER", "true"),
            ],
        )
        .unwrap();
        assert!(config.source.failover);
        assert!(!config.source.streaming);
        assert_eq!(config.source.messages, Messages::Write);
        assert_eq!(config.source.on_slot_ahead, SlotAhead::Gap);
        for (key, value) in [
            ("PGCDC_SOURCE_STREAMING", "sometimes"),
            ("PGCDC_SOURCE_MESSAGES", "keep"),
            ("PGCDC_SOURCE_ON_SLOT_AHEAD", "skip"),
            ("PGCDC_SOURCE_FAILOVER", "maybe"),
        ] {
            let err = load(FULL, &[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(value), "{err}");
        }
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
    fn s3_sink_settings() {
        let text = FULL.replace(
            "url = \"file:///var/lib/pgcdc/stage\"",
            "url = \"s3://my-bucket/cdc/prod/\"\nregion = \"eu-west-1\"\nforce_path_style = true\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/pgcdc\"\npart_size = \"8MiB\"",
        );
        let config = load(&text, &[("PGCDC_SINK_ENDPOINT", "http://127.0.0.1:9000")]).unwrap();
        let SinkTarget::S3(s3) = config.sink.target else {
            panic!("expected an S3 target");
        };
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.prefix, "cdc/prod");
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.force_path_style);
        assert_eq!(
            s3.sse,
            Some(Sse::Kms {
                key_id: Some("alias/pgcdc".into())
            })
        );
        assert_eq!(s3.part_size, 8 * 1024 * 1024);
        assert_eq!(s3.multipart_threshold, 64 * 1024 * 1024);
    }

    #[test]
    fn s3_mistakes_are_named() {
        for (url, extra, needle) in [
            ("s3://B", "", "not a valid S3 bucket name"),
            ("s3://bucket/p", "sse = \"rot13\"", "sink.sse"),
            ("s3://bucket/p", "part_size = \"1MiB\"", "at least 5MiB"),
            (
                "s3://bucket/p",
                "force_path_style = \"maybe\"",
                "not a boolean",
            ),
            (
                "s3://bucket/p",
                "endpoint = \"localhost:9000\"",
                "http:// or https://",
            ),
            (
                "file:///tmp/x",
                "region = \"eu-west-1\"",
                "applies to s3:// sinks only",
            ),
        ] {
            let text = FULL.replace(
                "url = \"file:///var/lib/pgcdc/stage\"",
                &format!("url = \"{url}\"\n{extra}"),
            );
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{url} {extra}: {err}");
        }
    }

    #[test]
    fn unknown_sections_and_keys_list_what_is_known() {
        let err = load(&format!("{FULL}\n[sinks]\nurl = \"x\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting sinks"), "{err}");
        assert!(err.contains("[source]"), "{err}");
        let err = load(FULL, &[("PGCDC_SINK_BUCKET", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting sink.bucket"), "{err}");
        assert!(err.contains("sink.endpoint"), "{err}");
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

    #[test]
    fn several_hosts_are_named_each_with_its_port() {
        let url = "postgres://pgcdc:hunter2@a:5433,b/shop?target_session_attrs=read-write";
        let config = load(FULL, &[("PGCDC_SOURCE_URL", url)]).unwrap();
        let connect = &config.source.connect;
        assert_eq!(
            connect.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(redacted_target(connect), "pgcdc@a:5433,b:5432/shop");
        assert_eq!(host_target(connect, 1), "pgcdc@b:5432/shop");
        let same_port = load(
            FULL,
            &[("PGCDC_SOURCE_URL", "host=a,b port=6000 user=u dbname=d")],
        )
        .unwrap();
        assert_eq!(
            redacted_target(&same_port.source.connect),
            "u@a:6000,b:6000/d"
        );
    }
}
