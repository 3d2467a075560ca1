//! The validated layer: each raw string checked and turned into the type the rest of pgcdc
//! works with, with an error that names the key, where its value came from and what to write
//! instead. Pure apart from reading root certificates for `sslrootcert`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::raw::{Origin, RawTable, unknown_key_error};
use super::*;
use crate::conninfo::{RootCert, SslMode, take_tls_params};
use crate::publication::Publications;
use crate::tls::Tls;

/// `batch.open_files` when unset: enough for the tables a busy window writes in turn, few enough
/// that they stay a few MiB (see `BatchConfig::open_files`).
const DEFAULT_OPEN_FILES: usize = 16;
/// Beyond this the bound no longer bounds much (a GiB of encoders) and descriptors run out.
const MAX_OPEN_FILES: usize = 4096;

pub(super) fn value_error(key: &str, origin: &Origin, message: impl Into<String>) -> ConfigError {
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

/// The environment variables pgcdc reads besides `PGCDC_*`: libpq's, as psql honours them,
/// and `TMPDIR`. Collected by the caller ([`super::Config::parse`]), so validation stays pure.
#[derive(Default)]
pub(super) struct ProcessEnv {
    pub password: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    /// `PGUSER`, then the login name (`USER`), as libpq defaults the user.
    pub user: Option<String>,
    pub login: Option<String>,
    /// Where the S3 sink's spool goes by default (as `std::env::temp_dir` would say).
    pub tmpdir: Option<String>,
}

pub(super) fn validate(mut raw: RawTable, libpq: ProcessEnv) -> Result<Config, ConfigError> {
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
        let user = libpq.user.or(libpq.login);
        connect.user(user.as_deref().unwrap_or("postgres"));
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

    let stall_timeout = parse_duration(
        "source.stall_timeout",
        raw.take_or("source.stall_timeout", "60s"),
    )?;
    let max_retries = match raw.take("source.max_retries") {
        None => 10,
        Some((value, origin)) => match value.trim().parse::<u32>() {
            Ok(n @ 1..) => n,
            _ => {
                return Err(value_error(
                    "source.max_retries",
                    &origin,
                    format!("{value:?} is not a number of tries of 1 or more"),
                ));
            }
        },
    };

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
    let maintenance_window = parse_duration(
        "source.maintenance_window",
        raw.take_or("source.maintenance_window", "24h"),
    )?;
    let tmp = PathBuf::from(libpq.tmpdir.as_deref().unwrap_or("/tmp"));
    let target = sink_target(&mut raw, slot.as_str(), &tmp)?;

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
    let open_files = match raw.take("batch.open_files") {
        None => DEFAULT_OPEN_FILES,
        Some((value, origin)) => match value.trim().parse::<usize>() {
            Ok(n @ 1..=MAX_OPEN_FILES) => n,
            _ => {
                return Err(value_error(
                    "batch.open_files",
                    &origin,
                    format!(
                        "{value:?} is not a number of files from 1 to {MAX_OPEN_FILES} (each open \
                         gzip file holds about a third of a MiB)"
                    ),
                ));
            }
        },
    };

    let workers = match raw.take("snapshot.workers") {
        None => None,
        Some((value, origin)) => match value.trim().parse::<usize>() {
            Ok(n @ 1..=64) => Some(n),
            _ => {
                return Err(value_error(
                    "snapshot.workers",
                    &origin,
                    format!("{value:?} is not a number of connections from 1 to 64"),
                ));
            }
        },
    };
    let chunk_size = parse_size(
        "snapshot.chunk_size",
        raw.take_or("snapshot.chunk_size", "32MiB"),
    )?;
    if chunk_size < 64 * 1024 {
        return Err(ConfigError::Invalid(
            "snapshot.chunk_size must be at least 64KiB (eight 8 KiB blocks)".to_owned(),
        ));
    }

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
            stall_timeout,
            max_retries,
            maintenance_window,
        },
        sink: SinkConfig { target },
        batch: BatchConfig {
            window,
            max_file_bytes,
            format,
            open_files,
        },
        snapshot: SnapshotConfig {
            workers,
            chunk_size,
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

fn sink_target(raw: &mut RawTable, slot: &str, tmp: &Path) -> Result<SinkTarget, ConfigError> {
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
        .unwrap_or_else(|| tmp.join(format!("pgcdc-{slot}-spool")));
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
