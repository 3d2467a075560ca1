//! Arbitrary text as pgcdc.toml: the loader must answer with a configuration or a
//! ConfigError, never a panic. The corpus holds the project's own example configs.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgcdc::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(
            Some((text, Path::new("fuzz.toml"))),
            std::iter::empty(),
            &Overrides::default(),
        );
    }
});
