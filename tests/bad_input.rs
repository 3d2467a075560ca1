//! The bad-input table: wrong configurations and unusable surroundings, each run through
//! `pgcdc run`. Every one must end (no hang, no retry loop) with a non-zero exit code, a message
//! that names the problem, no panic, and none of the secrets it was given.
//!
//! Configuration mistakes exit 78 (EX_CONFIG, so a supervisor stops retrying them); problems of
//! the surroundings (database, slot, TLS) exit 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use common::{
    Fixture, Pgcdc, PgcdcConfig, SCRAM_USER, SHOP_DB, free_port, password_for, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);
/// Given to every run as the AWS secret; it must never be printed.
const AWS_SECRET: &str = "aws-secret-that-must-not-leak";
const EX_CONFIG: i32 = 78;

struct Case {
    name: &'static str,
    /// The config file's text; `None` runs with a path that does not exist.
    config: Option<String>,
    /// Text the output must contain.
    expect: &'static str,
    code: i32,
}

/// A working config for `url`, with `edits` applied: each line is `section.key = value` (TOML),
/// replacing the key's default line or, when not present, added to the section.
fn config(url: &str, sink: &Path, edits: &[&str]) -> String {
    edits
        .iter()
        .fold(PgcdcConfig::new(url).local_sink(sink), |config, edit| {
            config.edit(edit)
        })
        .text()
}

/// The line pgcdc prints last on a fatal error.
fn error_line(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.starts_with("pgcdc: error:"))
        .unwrap_or("")
}

async fn run_case(dir: &Path, case: &Case, secrets: &[&str]) -> (ExitStatus, String) {
    let path: PathBuf = match &case.config {
        Some(text) => {
            let path = dir.join(format!("{}.toml", case.name.replace(' ', "-")));
            std::fs::write(&path, text).expect("writing the config");
            path
        }
        None => dir.join("no-such-config.toml"),
    };
    let mut pgcdc = Pgcdc::spawn(
        ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
        &[
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ],
    );
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = format!("{}{}", pgcdc.stdout(), pgcdc.stderr());
    for secret in secrets.iter().chain([&AWS_SECRET]) {
        assert!(
            !output.contains(secret),
            "case {:?} printed a secret:\n{output}",
            case.name
        );
    }
    (status, output)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_fails_with_its_own_message() {
    let setup = Fixture::builder()
        .ddl(
            "create table public.t (id int primary key, v text);
             create publication pgcdc_pub for table public.t;
             create role no_replication login password 'norepl-pw';",
        )
        .start()
        .await;
    let (cluster, dir, sink) = (&setup.cluster, &setup.dir, setup.sink.clone());
    let password = password_for(SCRAM_USER);
    let url = cluster.role_url(SCRAM_USER, SHOP_DB);
    let port = cluster.port();
    let wrong_password_url =
        format!("postgres://{SCRAM_USER}:not-the-password-123@127.0.0.1:{port}/{SHOP_DB}");
    let nobody_listens = format!(
        "postgres://{SCRAM_USER}:{password}@127.0.0.1:{}/{SHOP_DB}",
        free_port()
    );
    let c = |edits: &[&str]| Some(config(&url, &sink, edits));
    let with_url = |u: &str, edits: &[&str]| Some(config(u, &sink, edits));
    let missing_ca = dir.path().join("missing-ca.crt");
    let missing_ca_url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        missing_ca.display()
    );
    let unwritable_sink = format!("sink.url = \"file://{}/stage\"", "/etc/hostname");
    let dual_slot_url = url.clone();

    let cases = vec![
        Case {
            name: "no config file",
            config: None,
            expect: "no-such-config.toml",
            code: EX_CONFIG,
        },
        Case {
            name: "toml syntax",
            config: Some("[source\nurl = 1".to_owned()),
            expect: "config",
            code: EX_CONFIG,
        },
        Case {
            name: "no source url",
            config: Some("[batch]\nwindow = \"1s\"\n".to_owned()),
            expect: "source.url",
            code: EX_CONFIG,
        },
        Case {
            name: "unknown key",
            config: c(&["source.slott = \"x\""]),
            expect: "unknown setting source.slott",
            code: EX_CONFIG,
        },
        Case {
            name: "unknown section",
            config: c(&["sinks.url = \"x\""]),
            expect: "sinks",
            code: EX_CONFIG,
        },
        Case {
            name: "not a postgres url",
            config: with_url("mysql://db/shop", &[]),
            expect: "not a valid PostgreSQL connection string",
            code: EX_CONFIG,
        },
        Case {
            name: "bad sslmode",
            config: with_url(&format!("{url}?sslmode=sometimes"), &[]),
            expect: "unknown sslmode \"sometimes\"",
            code: EX_CONFIG,
        },
        Case {
            name: "verify-full without a root certificate",
            config: with_url(&format!("{url}?sslmode=verify-full"), &[]),
            expect: "no root certificate was given",
            code: EX_CONFIG,
        },
        Case {
            name: "root certificate file missing",
            config: with_url(&missing_ca_url, &[]),
            expect: "cannot read the root certificate file",
            code: EX_CONFIG,
        },
        Case {
            name: "bad duration",
            config: c(&["batch.window = \"5 parsecs\""]),
            expect: "batch.window",
            code: EX_CONFIG,
        },
        Case {
            name: "zero duration",
            config: c(&["batch.window = \"0s\""]),
            expect: "greater than zero",
            code: EX_CONFIG,
        },
        Case {
            name: "bad size",
            config: c(&["batch.max_file_bytes = \"lots\""]),
            expect: "batch.max_file_bytes",
            code: EX_CONFIG,
        },
        Case {
            name: "unknown file format",
            config: c(&["batch.format = \"parquet\""]),
            expect: "batch.format",
            code: EX_CONFIG,
        },
        Case {
            name: "bad slot name",
            config: c(&["source.slot = \"Bad-Slot!\""]),
            expect: "source.slot",
            code: EX_CONFIG,
        },
        Case {
            name: "unknown sink scheme",
            config: c(&["sink.url = \"ftp://host/stage\""]),
            expect: "sink.url",
            code: EX_CONFIG,
        },
        Case {
            name: "multipart part below the S3 minimum",
            config: c(&[
                "sink.url = \"s3://bucket/prefix\"",
                "sink.part_size = \"1MiB\"",
            ]),
            expect: "at least 5MiB",
            code: EX_CONFIG,
        },
        Case {
            name: "bad metrics address",
            config: c(&["metrics.listen = \"nowhere\""]),
            expect: "metrics.listen",
            code: EX_CONFIG,
        },
        Case {
            name: "bad on_slot_ahead",
            config: c(&["source.on_slot_ahead = \"maybe\""]),
            expect: "source.on_slot_ahead",
            code: EX_CONFIG,
        },
        Case {
            name: "bad messages choice",
            config: c(&["source.messages = \"sometimes\""]),
            expect: "source.messages",
            code: EX_CONFIG,
        },
        Case {
            name: "unwritable sink",
            config: c(&[unwritable_sink.as_str()]),
            expect: "/etc/hostname/stage",
            code: 1,
        },
        Case {
            name: "nobody listens",
            config: with_url(&nobody_listens, &[]),
            expect: "check that the server is running",
            code: 1,
        },
        Case {
            name: "wrong password",
            config: with_url(&wrong_password_url, &[]),
            expect: "password authentication failed",
            code: 1,
        },
        Case {
            name: "unknown database",
            config: with_url(&cluster.role_url(SCRAM_USER, "nodb"), &[]),
            expect: "\"nodb\" does not exist",
            code: 1,
        },
        Case {
            name: "unknown publication",
            config: c(&["source.publication = \"nopub\""]),
            expect: "publication \"nopub\" does not exist",
            code: 1,
        },
        Case {
            name: "role without replication",
            config: with_url(
                &cluster.url("no_replication", Some("norepl-pw"), SHOP_DB),
                &[],
            ),
            expect: "replication",
            code: 1,
        },
        Case {
            name: "TLS required but unavailable",
            config: with_url(&format!("{url}?sslmode=require"), &[]),
            expect: "does not accept TLS connections",
            code: 1,
        },
    ];
    assert!(cases.len() >= 20);

    let secrets = [password.as_str(), "not-the-password-123", "norepl-pw"];
    let mut table = Vec::new();
    for case in &cases {
        let (status, output) = run_case(dir.path(), case, &secrets).await;
        let first_error = error_line(&output);
        assert!(
            !output.contains("panicked"),
            "case {:?} panicked:\n{output}",
            case.name
        );
        assert_eq!(
            status.code(),
            Some(case.code),
            "case {:?}: exit status {status}, expected {}:\n{output}",
            case.name,
            case.code
        );
        assert!(
            first_error.contains(case.expect),
            "case {:?}: expected {:?} in the error line, got:\n{output}",
            case.name,
            case.expect
        );
        table.push(format!("{:>3}  {:<42} {first_error}", case.code, case.name));
    }

    // The slot held by another process: a second pgcdc on the same slot.
    let text = config(&dual_slot_url, &sink, &[]);
    let path = dir.path().join("first.toml");
    std::fs::write(&path, &text).expect("config");
    let mut first = Pgcdc::spawn(["run".as_ref(), "--config".as_ref(), path.as_os_str()], &[]);
    first.wait_output("Streaming changes", DEADLINE).await;
    wait_until("the slot is active", DEADLINE, || async {
        cluster
            .query_scalar("select active::text from pg_replication_slots where slot_name = 'pgcdc'")
            .await
            .as_deref()
            == Some("true")
    })
    .await;
    let held = Case {
        name: "slot held by another process",
        config: Some(config(&dual_slot_url, &dir.path().join("stage2"), &[])),
        expect: "is in use by another process",
        code: 1,
    };
    let (status, output) = run_case(dir.path(), &held, &secrets).await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains(held.expect), "{output}");
    table.push(format!(
        "{:>3}  {:<42} {}",
        1,
        held.name,
        output
            .lines()
            .find(|l| l.starts_with("pgcdc: error:"))
            .unwrap_or("")
    ));
    first.stop_cleanly(DEADLINE).await;

    println!(
        "exit  case                                       message\n{}",
        table.join("\n")
    );
}
