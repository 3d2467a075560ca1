//! TLS to PostgreSQL: every sslmode against a test cluster serving a certificate of a throwaway
//! CA, with libpq's outcomes, and a full run (snapshot over the SQL connection, changes over the
//! replication connection) under verify-full.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Fixture, Pgcdc, SCRAM_USER, SHOP_DB, password_for, pgcdc_output, replay, table_state,
    try_read_change_files, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// The suite's fixture: a cluster that accepts the password roles over TCP only with TLS, and
/// a config for the SCRAM role (its URL is overridden per case).
async fn fixture() -> Fixture {
    Fixture::builder()
        .tls(true)
        .ddl(
            "create table public.notes (id int primary key, body text);
             insert into public.notes select g, 'note ' || g from generate_series(1, 50) g;
             create publication pgcdc_pub for table public.notes;",
        )
        .role(SCRAM_USER)
        .max_file_bytes("128MiB")
        .format("csv")
        .deadline(DEADLINE)
        .start()
        .await
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
    let setup = fixture().await;
    let ca = root(&setup.ca().ca_cert);
    let other = root(&setup.ca().other_ca_cert);
    let passes = [
        (
            "verify-full, the certificate's own name",
            setup.role_url_at("localhost", &format!("sslmode=verify-full&{ca}")),
        ),
        (
            "verify-ca, an address the certificate does not name",
            setup.role_url_at("127.0.0.1", &format!("sslmode=verify-ca&{ca}")),
        ),
        (
            "require, nothing checked",
            setup.role_url_at("127.0.0.1", "sslmode=require"),
        ),
        (
            "prefer, the server offers TLS",
            setup.role_url_at("127.0.0.1", "sslmode=prefer"),
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
            setup.role_url_at("127.0.0.1", &format!("sslmode=verify-full&{ca}")),
            "certificate not valid for name",
        ),
        (
            "verify-full, a root that signed nothing here",
            setup.role_url_at("localhost", &format!("sslmode=verify-full&{other}")),
            "UnknownIssuer",
        ),
        (
            "verify-ca, a root that signed nothing here",
            setup.role_url_at("127.0.0.1", &format!("sslmode=verify-ca&{other}")),
            "UnknownIssuer",
        ),
        (
            "disable, the server wants TLS",
            setup.role_url_at("127.0.0.1", "sslmode=disable"),
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
        &setup.role_url_at("localhost", "sslmode=verify-full"),
    );
    assert!(!ok && text.contains("sslrootcert"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_against_a_server_without_tls_says_so() {
    let setup = Fixture::builder()
        .role(SCRAM_USER)
        .url_params("sslmode=require")
        .max_file_bytes("128MiB")
        .format("csv")
        .start()
        .await;
    let url = format!(
        "{}?sslmode=require",
        setup.cluster.role_url(SCRAM_USER, SHOP_DB)
    );
    let config = setup.config.clone();
    let (ok, text) = check(&config, &url);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not accept TLS connections") && text.contains("sslmode=require"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_under_verify_full_snapshots_and_streams() {
    let setup = fixture().await;
    let url = setup.role_url_at(
        "localhost",
        &format!("sslmode=verify-full&{}", root(&setup.ca().ca_cert)),
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
