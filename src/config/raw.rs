//! The raw layer: the TOML file, the `PGCDC_<SECTION>_<KEY>` environment variables and the
//! command-line flags merged into one table of strings, each with where it came from, and
//! nothing checked yet but that every key is one pgcdc knows. Pure: the caller hands in the
//! file's text and the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::validate::value_error;

/// Sections that environment variables may override. Other `PGCDC_*` variables (such as
/// `PGCDC_CONFIG` or `PGCDC_LOG`) belong to the command line, not to the file.
pub(super) const SECTIONS: &[&str] = &["source", "sink", "batch", "snapshot", "metrics"];

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
pub(super) enum Origin {
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
pub(super) struct RawTable(pub(super) BTreeMap<String, (String, Origin)>);

impl RawTable {
    pub(super) fn insert(&mut self, key: String, value: String, origin: Origin) {
        self.0.insert(key, (value, origin));
    }

    pub(super) fn take(&mut self, key: &str) -> Option<(String, Origin)> {
        self.0.remove(key)
    }

    pub(super) fn take_or(&mut self, key: &str, default: &str) -> (String, Origin) {
        self.take(key)
            .unwrap_or_else(|| (default.to_owned(), Origin::Default))
    }

    pub(super) fn require(&mut self, key: &str) -> Result<(String, Origin), ConfigError> {
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
            "stall_timeout",
            "max_retries",
            "maintenance_window",
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
    (
        "batch",
        &["window", "max_file_bytes", "format", "open_files"],
    ),
    ("snapshot", &["workers", "chunk_size"]),
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

pub(super) fn unknown_key_error(key: &str, origin: &Origin) -> ConfigError {
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

pub(super) fn read_file(text: &str, path: &Path, raw: &mut RawTable) -> Result<(), ConfigError> {
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
