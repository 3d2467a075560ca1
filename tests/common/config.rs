//! The pgcdc TOML configuration a test runs with: [`PgcdcConfig`] is the one writer every suite
//! uses (through [`Fixture`](super::fixture::Fixture) or directly), [`add_settings`] edits a
//! written file in place.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, let it go).
///
/// Someone else may take it before it is used; the cluster retries on a bind failure.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A pgcdc config file: sections in order, each a list of `key = <TOML value>`.
///
/// [`PgcdcConfig::new`] is the smallest config pgcdc runs with:
///
/// ```toml
/// [source]
/// url = "<source_url>"
/// slot = "pgcdc"
/// publication = "pgcdc_pub"
///
/// [sink]
///
/// [batch]
/// window = "1s"
///
/// [metrics]
/// listen = "127.0.0.1:<a free port>"
/// ```
///
/// Everything else is pgcdc's default unless set: a test states only what it is about.
#[derive(Clone, Debug)]
pub struct PgcdcConfig {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl PgcdcConfig {
    pub fn new(source_url: &str) -> PgcdcConfig {
        let section = |name: &str| (name.to_owned(), Vec::new());
        PgcdcConfig {
            sections: vec![
                section("source"),
                section("sink"),
                section("batch"),
                section("metrics"),
            ],
        }
        .set("source.url", source_url)
        .set("source.slot", "pgcdc")
        .set("source.publication", "pgcdc_pub")
        .set("batch.window", "1s")
        .with_free_metrics_port()
    }

    /// `section.key = "value"` (a TOML string), replacing the key if it is there.
    pub fn set(self, key: &str, value: &str) -> PgcdcConfig {
        self.set_toml(key, &toml_string(value))
    }

    /// `section.key = <toml>`, the value written as given (`true`, `5`, `"quoted"`); a section
    /// not there yet is added at the end.
    pub fn set_toml(mut self, key: &str, toml: &str) -> PgcdcConfig {
        let (section, key) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("config key {key:?} is not section.key"));
        let at = match self.sections.iter().position(|(name, _)| name == section) {
            Some(at) => at,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let lines = &mut self.sections[at].1;
        lines.retain(|(k, _)| k != key);
        lines.push((key.to_owned(), toml.to_owned()));
        self
    }

    /// Without `section.key` (pgcdc's default applies).
    pub fn unset(mut self, key: &str) -> PgcdcConfig {
        let (section, key) = key.split_once('.').expect("section.key");
        for (name, lines) in &mut self.sections {
            if name == section {
                lines.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// `section.key = <toml>` written as one line, e.g. `"batch.window = \"5 parsecs\""`.
    pub fn edit(self, line: &str) -> PgcdcConfig {
        let (key, toml) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("config edit {line:?} is not `section.key = value`"));
        self.set_toml(key, toml)
    }

    /// Each `key = <toml>` line of `lines` (blank lines skipped) into `section`.
    pub fn lines(self, section: &str, lines: &str) -> PgcdcConfig {
        lines
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .fold(self, |config, line| {
                config.edit(&format!("{section}.{line}"))
            })
    }

    /// `[sink] url = "file://<dir, absolute>"`.
    pub fn local_sink(self, dir: &Path) -> PgcdcConfig {
        let dir = std::path::absolute(dir).expect("absolute sink path");
        let dir = dir.to_str().expect("sink path is UTF-8");
        self.set("sink.url", &format!("file://{dir}"))
    }

    /// `[sink]` for an S3-compatible server: `url = "s3://<bucket>/<prefix>"`, its endpoint,
    /// path-style requests and the local spool directory.
    pub fn s3_sink(self, bucket: &str, prefix: &str, endpoint: &str, spool: &Path) -> PgcdcConfig {
        let spool = spool.to_str().expect("spool path is UTF-8");
        self.set("sink.url", &format!("s3://{bucket}/{prefix}"))
            .set("sink.endpoint", endpoint)
            .set_toml("sink.force_path_style", "true")
            .set("sink.spool_dir", spool)
    }

    /// `[metrics] listen` on a port free now (each config its own, so runs do not collide).
    pub fn with_free_metrics_port(self) -> PgcdcConfig {
        self.set("metrics.listen", &format!("127.0.0.1:{}", free_port()))
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text =
            String::from("# Written by the pgcdc test harness (tests/common/config.rs).\n");
        for (i, (name, lines)) in self.sections.iter().enumerate() {
            let _ = writeln!(text, "{}[{name}]", if i == 0 { "" } else { "\n" });
            for (key, value) in lines {
                let _ = writeln!(text, "{key} = {value}");
            }
        }
        text
    }

    /// Writes the file to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path.to_owned()
    }
}

/// Adds `lines` (`key = value`, one per line) at the top of `[section]` in a written config.
pub fn add_settings(config: &Path, section: &str, lines: &str) {
    let header = format!("[{section}]\n");
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("reading {}: {e}", config.display()));
    assert!(
        text.contains(&header),
        "{} has no {header}",
        config.display()
    );
    let text = text.replacen(&header, &format!("{header}{lines}\n"), 1);
    std::fs::write(config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
}

/// The `[metrics] listen` address of a written config.
pub fn metrics_listen(config: &Path) -> String {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|e| panic!("reading {}: {e}", config.display()));
    let table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", config.display()));
    table
        .get("metrics")
        .and_then(|m| m.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or_else(|| panic!("{} has no [metrics] listen", config.display()))
        .to_owned()
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
