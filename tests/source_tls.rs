//! TLS to PostgreSQL: every sslmode against a test cluster serving a certificate of a throwaway
//! CA, with libpq's outcomes, and a full run (snapshot over the SQL connection, changes over the
//! replication connection) under verify-full.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tls::TestCa;
use common::{
    PgCluster, Pgcdc, SCRAM_USER, SHOP_DB, password_for, pgcdc_output, replay, table_state,
    try_read_change_files, wait_until, write_config,
};

const DEADLINE: Duration = Duration::from_secs(60);

struct Setup {
    cluster: PgCluster,
    ca: TestCa,
    config: PathBuf,
    sink: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// A cluster that accepts the password roles over TCP only with TLS.
    async fn new() -> Setup {
        let cluster = PgCluster::start().await;
        let ca = TestCa::generate();
        cluster
            .enable_tls(&ca.server_cert, &ca.server_key, true)
            .await;
        cluster
            .execute(
                "create table public.notes (id int primary key, body text);
                 insert into public.notes select g, 'note ' || g from generate_series(1, 50) g;
                 create publication pgcdc_pub for table public.notes;",
            )
            .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let sink = dir.path().join("stage");
        let config = write_config(
            dir.path(),
            &cluster.role_url(SCRAM_USER, SHOP_DB),
            "pgcdc",
            "pgcdc_pub",
            &sink,
            "1s",
            "128MiB",
            "csv",
        );
        Setup {
            cluster,
            ca,
            config,
            sink,
            _dir: dir,
        }
    }

    /// The test role's URL for `host`, with `params` appended as the query string.
    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://{SCRAM_USER}:{}@{host}:{}/{SHOP_DB}?{params}",
            password_for(SCRAM_USER),
            self.cluster.port()
        )
    }
}

/// `pgcdc check` with `url`; (exit status success, stdout + stderr).
fn check(config: &Path, url: &str) -> (bool, String) {
    let output = pgcdc_output(
        ["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[("PGCDC_SOURCE_URL", url)],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !text.contains(&password_for(SCRAM_USER)),
        "the password leaked:\n{text}"
    );
    (output.status.success(), text)
}

fn root(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sslmode_connects_or_refuses_as_libpq_would() {
    let setup = Setup::new().await;
    let ca = root(&setup.ca.ca_cert);
    let other = root(&setup.ca.other_ca_cert);
    let passes = [
        (
            "verify-full, the certificate's own name",
            setup.url("localhost", &format!("sslmode=verify-full&{ca}")),
        ),
        (
            "verify-ca, an address the certificate does not name",
            setup.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}")),
        ),
        (
            "require, nothing checked",
            setup.url("127.0.0.1", "sslmode=require"),
        ),
        (
            "prefer, the server offers TLS",
            setup.url("127.0.0.1", "sslmode=prefer"),
        ),
    ];
    for (case, url) in passes {
        let (ok, text) = check(&setup.config, &url);
        assert!(ok, "{case}: expected success:\n{text}");
        assert!(text.contains("ok    connect"), "{case}:\n{text}");
    }

    let fails = [
        (
            "verify-full, an address the certificate does not name",
            setup.url("127.0.0.1", &format!("sslmode=verify-full&{ca}")),
            "certificate not valid for name",
        ),
        (
            "verify-full, a root that signed nothing here",
            setup.url("localhost", &format!("sslmode=verify-full&{other}")),
            "UnknownIssuer",
        ),
        (
            "verify-ca, a root that signed nothing here",
            setup.url("127.0.0.1", &format!("sslmode=verify-ca&{other}")),
            "UnknownIssuer",
        ),
        (
            "disable, the server wants TLS",
            setup.url("127.0.0.1", "sslmode=disable"),
            "no encryption",
        ),
    ];
    for (case, url, needle) in fails {
        let (ok, text) = check(&setup.config, &url);
        assert!(!ok, "{case}: expected a failure:\n{text}");
        assert!(
            text.contains("FAIL  connect") && text.contains(needle),
            "{case}: expected {needle:?} in:\n{text}"
        );
    }
    let (ok, text) = check(
        &setup.config,
        &setup.url("localhost", "sslmode=verify-full"),
    );
    assert!(!ok && text.contains("sslrootcert"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_against_a_server_without_tls_says_so() {
    let cluster = PgCluster::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("{}?sslmode=require", cluster.role_url(SCRAM_USER, SHOP_DB));
    let config = write_config(
        dir.path(),
        &url,
        "pgcdc",
        "pgcdc_pub",
        &dir.path().join("stage"),
        "1s",
        "128MiB",
        "csv",
    );
    let (ok, text) = check(&config, &url);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not accept TLS connections") && text.contains("sslmode=require"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_under_verify_full_snapshots_and_streams() {
    let setup = Setup::new().await;
    let url = setup.url(
        "localhost",
        &format!("sslmode=verify-full&{}", root(&setup.ca.ca_cert)),
    );
    let mut pgcdc = Pgcdc::spawn(
        [
            "run".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
        ],
        &[("PGCDC_SOURCE_URL", url.as_str())],
    );
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.notes select g, 'later, \"' || g || '\"' from generate_series(51, 80) g;
             update public.notes set body = 'changed' where id <= 10;
             delete from public.notes where id between 20 and 25;",
        )
        .await;
    let client = setup.cluster.client(SHOP_DB).await;
    let expected = table_state(&client, "public.notes", &["id"]).await;
    wait_until("the files replay to the table", DEADLINE, || {
        let expected = &expected;
        let sink = &setup.sink;
        async move {
            let rows = try_read_change_files(sink, "public.notes").unwrap_or_default();
            replay(&rows, &["id"]) == *expected
        }
    })
    .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    // Both connections really were encrypted: the server refuses the role anything else.
    assert!(
        setup
            .cluster
            .log_text()
            .contains("replication connection authorized: user=pgcdc_scram")
            && setup.cluster.log_text().contains("SSL enabled"),
        "{}",
        setup.cluster.log_tail(30)
    );
}
