//! The pgcdc TOML configuration a test runs with.

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

/// Writes `<dir>/pgcdc-<slot>.toml` and returns its path:
///
/// ```toml
/// [source]
/// url = "<source_url>"
/// slot = "<slot>"
/// publication = "<publication>"
/// [sink]
/// url = "file://<sink_dir, absolute>"
/// [batch]
/// window = "<window>"
/// max_file_bytes = "<max_file_bytes>"
/// format = "<format>"            # "csv.gz" or "csv"
/// [metrics]
/// listen = "127.0.0.1:<a free port>"
/// ```
///
/// Read the metrics address back with [`metrics_listen`].
#[allow(clippy::too_many_arguments)]
pub fn write_config(
    dir: &Path,
    source_url: &str,
    slot: &str,
    publication: &str,
    sink_dir: &Path,
    window: &str,
    max_file_bytes: &str,
    format: &str,
) -> PathBuf {
    let sink_dir = std::path::absolute(sink_dir).expect("absolute sink path");
    let sink_dir = sink_dir.to_str().expect("sink path is UTF-8");
    let mut text = String::from("# Written by the pgcdc test harness (tests/common/config.rs).\n");
    let _ = write!(
        text,
        "[source]\n\
         url = {}\n\
         slot = {}\n\
         publication = {}\n\
         \n\
         [sink]\n\
         url = {}\n\
         \n\
         [batch]\n\
         window = {}\n\
         max_file_bytes = {}\n\
         format = {}\n\
         \n\
         [metrics]\n\
         listen = {}\n",
        toml_string(source_url),
        toml_string(slot),
        toml_string(publication),
        toml_string(&format!("file://{sink_dir}")),
        toml_string(window),
        toml_string(max_file_bytes),
        toml_string(format),
        toml_string(&format!("127.0.0.1:{}", free_port())),
    );
    let path = dir.join(format!("pgcdc-{slot}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Adds `lines` (`key = value`, one per line) at the top of `[section]` in a config written by
/// [`write_config`].
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

/// The `[metrics] listen` address of a config written by [`write_config`].
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
fn toml_string(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_toml() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            dir.path(),
            "postgres://u:p\"w@127.0.0.1:5/shop",
            "s1",
            "pub",
            &dir.path().join("stage"),
            "2s",
            "1MiB",
            "csv",
        );
        let table: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("valid TOML");
        assert_eq!(
            table["source"]["url"].as_str(),
            Some("postgres://u:p\"w@127.0.0.1:5/shop")
        );
        assert_eq!(table["batch"]["format"].as_str(), Some("csv"));
        let sink = table["sink"]["url"].as_str().expect("sink url");
        assert!(
            sink.starts_with("file:///") && sink.ends_with("/stage"),
            "{sink}"
        );
        assert!(metrics_listen(&path).starts_with("127.0.0.1:"));
    }
}
