//! Validated configuration.
//!
//! Configuration is read in two stages, as ripgrep does with its flags: the TOML file, the
//! `PGCDC_<SECTION>_<KEY>` environment variables and the command-line flags are merged into one
//! raw table of strings, then validated into [`Config`], whose fields are already the types the
//! rest of pgcdc works with (`Duration`, byte counts, a parsed connection config, a sink target).
//! Nothing past this module sees a raw string it has to re-check.
//!
//! Precedence: flags > environment > file > defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod raw;
mod validate;

pub use raw::Overrides;
use raw::{Origin, RawTable, SECTIONS};
use validate::{ProcessEnv, validate};

use crate::conninfo::redacted_target;
pub use crate::layout::FileFormat;
pub use crate::publication::Publications;
use crate::tls::Tls;

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
    pub snapshot: SnapshotConfig,
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
    /// How long the replication socket may go unread while the pipeline cannot take changes
    /// and the sink still answers (a large upload), before pgcdc closes the connection so the
    /// server is not held. With the sink down, pgcdc closes it after about a second.
    pub stall_timeout: Duration,
    /// How many reconnects in a row may end in the same error (a missing publication, a slot
    /// held by another consumer) before pgcdc stops with it instead of looping. A server that
    /// cannot be reached is retried for as long as it takes.
    pub max_retries: u32,
    /// The longest pgcdc may be stopped (an upgrade, an incident, a weekend) without losing its
    /// slot: `pgcdc check` warns when PostgreSQL 18's `idle_replication_slot_timeout` is shorter,
    /// because the server would invalidate an inactive slot before pgcdc comes back.
    pub maintenance_window: Duration,
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
            .field("stall_timeout", &self.stall_timeout)
            .field("max_retries", &self.max_retries)
            .field("maintenance_window", &self.maintenance_window)
            .finish()
    }
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
    /// Files of a window open at once; writing to another parks the least recently written one
    /// (its gzip member finished, the file closed). Bounds memory whatever the number of tables
    /// a window touches: each open gzip file costs about a third of a MiB.
    pub open_files: usize,
}

/// How existing rows are copied (first start, `slot reset`, `pgcdc snapshot`, tables added later).
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Connections copying at once; `None` means one per CPU core (at most 8). Each is an
    /// ordinary connection beside the replication one, so `max_connections` must allow them.
    pub workers: Option<usize>,
    /// Heap bytes one chunk reads (a range of the table's blocks). A chunk is the unit of
    /// progress: a restart redoes at most the chunks not yet durable, and no transaction of a
    /// copy lasts longer than reading one chunk.
    pub chunk_size: u64,
}

impl SnapshotConfig {
    /// Workers to run: the configured number, or one per core (at most 8).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(8)
        })
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
            raw::read_file(text, path, &mut raw)?;
        }
        let mut libpq = ProcessEnv::default();
        for (name, value) in env {
            match name.as_str() {
                "PGPASSWORD" => libpq.password = Some(value),
                "PGSSLMODE" => libpq.sslmode = Some(value),
                "PGSSLROOTCERT" => libpq.sslrootcert = Some(value),
                "PGUSER" => libpq.user = Some(value),
                "USER" => libpq.login = Some(value),
                "TMPDIR" => libpq.tmpdir = Some(value),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conninfo::host_target;

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
        assert_eq!(
            config.source.maintenance_window,
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn the_maintenance_window_is_a_duration() {
        let config = load(FULL, &[("PGCDC_SOURCE_MAINTENANCE_WINDOW", "3d")]).unwrap();
        assert_eq!(
            config.source.maintenance_window,
            Duration::from_secs(3 * 86_400)
        );
        let err = load(FULL, &[("PGCDC_SOURCE_MAINTENANCE_WINDOW", "a while")]).unwrap_err();
        assert!(
            err.to_string().contains("source.maintenance_window"),
            "{err}"
        );
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
