//! Tests of the test harness itself (tests/common): the throwaway cluster, its roles and
//! authentication methods, restarts, the process helper and the change-file replay. None of them
//! needs the pgcdc binary to do anything.

mod common;

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    CLEAR_USER, MD5_USER, PgCluster, SCRAM_USER, SHOP_DB, StopMode, describe_diff, duplicate_keys,
    parse_file_name, password_for, read_change_files, replay, table_state, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn cluster_runs_with_logical_wal_and_test_roles() {
    let pg = PgCluster::start().await;
    let setting = |name: &'static str| {
        let pg = &pg;
        async move { pg.query_scalar(&format!("show {name}")).await }
    };
    assert_eq!(setting("wal_level").await.as_deref(), Some("logical"));
    assert_eq!(
        setting("max_replication_slots").await.as_deref(),
        Some("10")
    );
    assert_eq!(setting("max_wal_senders").await.as_deref(), Some("10"));
    assert_eq!(setting("wal_sender_timeout").await.as_deref(), Some("1min"));
    assert_eq!(
        setting("listen_addresses").await.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(setting("port").await, Some(pg.port().to_string()));
    assert_eq!(setting("fsync").await.as_deref(), Some("off"));
    assert_eq!(setting("TimeZone").await.as_deref(), Some("UTC"));
    assert_eq!(
        setting("unix_socket_directories").await.as_deref(),
        pg.socket_dir().to_str()
    );
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists()
    );
    assert!(
        pg.log_text().contains("database system is ready"),
        "{}",
        pg.log_tail(20)
    );

    let roles = pg
        .query_scalar(
            "select string_agg(rolname || ':' || rolcanlogin || rolreplication || rolsuper, ',' \
             order by rolname) from pg_roles where rolname like 'pgcdc%'",
        )
        .await;
    assert_eq!(
        roles.as_deref(),
        Some("pgcdc_clear:truetruefalse,pgcdc_md5:truetruefalse,pgcdc_scram:truetruefalse")
    );
    assert_eq!(
        pg.query_scalar("select pg_get_userbyid(datdba) from pg_database where datname = 'shop'")
            .await
            .as_deref(),
        Some("postgres")
    );

    // Tables the superuser creates later are readable by the test roles (default privileges).
    pg.execute("create table later (id int primary key); insert into later values (1)")
        .await;
    let (client, connection) =
        tokio_postgres::connect(&pg.role_url(SCRAM_USER, SHOP_DB), tokio_postgres::NoTls)
            .await
            .expect("scram role connects");
    tokio::spawn(connection);
    let n: i64 = client
        .query_one("select count(*) from later", &[])
        .await
        .expect("select as pgcdc_scram")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_password_method_authenticates_and_is_enforced() {
    let pg = PgCluster::start().await;
    for (role, method, verifier) in [
        (SCRAM_USER, "scram-sha-256", "SCRAM-SHA-256$"),
        (MD5_USER, "md5", "md5"),
        (CLEAR_USER, "password", "SCRAM-SHA-256$"),
    ] {
        let stored = pg
            .query_scalar(&format!(
                "select rolpassword from pg_authid where rolname = '{role}'"
            ))
            .await
            .expect("password set");
        assert!(
            stored.starts_with(verifier),
            "{role}: stored verifier {stored}"
        );

        let url = pg.role_url(role, SHOP_DB);
        assert_eq!(url, pg.url(role, Some(&password_for(role)), SHOP_DB));
        assert!(url.starts_with(&format!("postgres://{role}:secret-pw-{role}@127.0.0.1:")));
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{role} with its password: {e:?}"));
        tokio::spawn(connection);
        let user: String = client
            .query_one("select current_user::text", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(user, role);

        // The server really used the method pg_hba.conf names for the role (log_connections).
        let needle = format!("identity=\"{role}\" method={method} ");
        wait_until(&format!("the log to show {needle}"), DEADLINE, || async {
            pg.log_text().contains(&needle)
        })
        .await;

        let wrong = pg.url(role, Some("not-the-password"), SHOP_DB);
        let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{role} logged in with a wrong password"));
        assert_eq!(
            err.as_db_error().map(|db| db.code().code()),
            Some("28P01"),
            "{role}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replication_connections_use_the_same_methods() {
    let pg = PgCluster::start().await;
    // psql ships with the server binaries; tokio-postgres cannot open a replication connection.
    let psql = pg.bindir().join("psql");
    for role in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let url = format!("{}?replication=database", pg.role_url(role, SHOP_DB));
        let out = Command::new(&psql)
            .args(["-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM", &url])
            .output()
            .expect("running psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("|shop"),
            "{role}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let wrong = format!(
            "{}?replication=database",
            pg.url(role, Some("not-the-password"), SHOP_DB)
        );
        let out = Command::new(&psql)
            .args(["-X", "-w", "-c", "IDENTIFY_SYSTEM", &wrong])
            .output()
            .expect("running psql");
        assert!(
            !out.status.success(),
            "{role} replicated with a wrong password"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_port_data_and_committed_rows() {
    let pg = PgCluster::start().await;
    let port = pg.port();
    pg.execute("create table kept (id int primary key); insert into kept values (1)")
        .await;

    pg.restart(StopMode::Fast).await;
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.query_scalar("select count(*) from kept")
            .await
            .as_deref(),
        Some("1")
    );

    // A crash keeps what was committed with synchronous_commit on (written to the OS).
    pg.execute("set synchronous_commit = on; insert into kept values (2)")
        .await;
    pg.restart(StopMode::Immediate).await;
    assert_eq!(
        pg.query_scalar("select count(*) from kept")
            .await
            .as_deref(),
        Some("2")
    );
    assert!(
        pg.log_text().contains("database system was interrupted")
            || pg
                .log_text()
                .contains("database system was not properly shut down"),
        "no crash recovery after an immediate stop\n{}",
        pg.log_tail(30)
    );

    // Clients made before a restart fail; new ones work.
    let client = pg.client(SHOP_DB).await;
    pg.stop(StopMode::Fast).await;
    assert!(client.simple_query("select 1").await.is_err());
    pg.start_again().await;
    assert_eq!(pg.query_scalar("select 1").await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_cluster_stops_it_and_removes_its_directory() {
    let pg = PgCluster::start().await;
    let dir = pg.socket_dir().to_owned();
    let port = pg.port();
    drop(pg);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let refused = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(refused.is_err(), "something still listens on port {port}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_until_returns_the_value_it_waited_for() {
    let mut calls = 0;
    let value = wait_until("the third call", DEADLINE, || {
        calls += 1;
        let n = calls;
        async move { (n >= 3).then_some(n * 10) }
    })
    .await;
    assert_eq!(value, 30);
    let ok: Result<&str, String> = Ok("ready");
    assert_eq!(
        wait_until("ok", DEADLINE, || async { ok.clone() }).await,
        "ready"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[should_panic(expected = "waiting for a condition that never holds; last check: \"still no\"")]
async fn wait_until_panics_with_what_and_the_last_answer() {
    wait_until(
        "a condition that never holds",
        Duration::from_millis(200),
        || async { Err::<(), _>("still no") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn process_helper_terminates_and_collects_output() {
    let script = "echo started; echo oops >&2; exec sleep 60";
    let mut child = common::Pgcdc::spawn_program(Path::new("/bin/sh"), ["-c", script], &[]);
    child.wait_output("started", DEADLINE).await;
    assert!(child.try_exit().is_none());
    child.terminate();
    let status = child.wait_exit(DEADLINE).await;
    assert_eq!(status.signal(), Some(15), "{}", child.output_text());
    assert!(child.stderr().contains("oops"));
    assert!(child.output_text().contains("exited"));
    child.terminate(); // reaped: a no-op, never a signal to a recycled pid

    let mut child =
        common::Pgcdc::spawn_program(Path::new("/bin/sh"), ["-c", "exec sleep 60"], &[]);
    assert_eq!(child.kill().signal(), Some(9));
}

/// The SQL the demo and the docs rely on: replication_setup/0*.sql applies twice, the sample
/// generator is deterministic and honours `:rows`, the workload runs.
#[tokio::test(flavor = "multi_thread")]
async fn replication_setup_scripts_apply_idempotently() {
    let pg = PgCluster::start().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("replication_setup");
    let url = pg.url("postgres", None, SHOP_DB);
    let psql = |args: &[&str]| {
        let out = Command::new(pg.bindir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url])
            .args(args)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut numbered: Vec<_> = std::fs::read_dir(&dir)
        .expect("replication_setup/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(".sql")
        })
        .collect();
    numbered.sort();
    assert!(numbered.len() >= 2, "{numbered:?}");
    for _ in 0..2 {
        for file in &numbered {
            psql(&["-f", file.to_str().expect("UTF-8 path")]);
        }
    }
    assert_eq!(
        pg.query_scalar(
            "select string_agg(schemaname || '.' || tablename, ',') from pg_publication_tables \
             where pubname = 'pgcdc_pub'"
        )
        .await
        .as_deref(),
        Some("public.ecommerce_sales")
    );

    let sample = dir.join("sample_data.sql");
    let sample = sample.to_str().expect("UTF-8 path");
    let fingerprint = "select count(*) || ' ' || md5(string_agg(s::text, '|' order by id)) \
                       from ecommerce_sales as s";
    psql(&["-v", "rows=300", "-f", sample]);
    let first = pg.query_scalar(fingerprint).await.expect("fingerprint");
    assert!(first.starts_with("300 "), "{first}");
    pg.execute("truncate ecommerce_sales restart identity")
        .await;
    psql(&["-v", "rows=300", "-f", sample]);
    assert_eq!(pg.query_scalar(fingerprint).await, Some(first));
    pg.execute("truncate ecommerce_sales restart identity")
        .await;
    psql(&["-f", sample]);
    assert_eq!(
        pg.query_scalar("select count(*) from ecommerce_sales")
            .await
            .as_deref(),
        Some("2000")
    );
    let shape = pg
        .query_scalar(
            "select (count(*) filter (where invoice_no like 'C%') between 1 and 100)::text \
             || (count(*) filter (where invoice_no like 'C%' and quantity >= 0) = 0)::text \
             || (count(*) filter (where customer_id is null) between 200 and 600)::text \
             || (min(invoice_date) >= '2010-12-01' and max(invoice_date) < '2011-12-10')::text \
             || (min(unit_price) >= 0.29 and max(unit_price) <= 50)::text \
             from ecommerce_sales",
        )
        .await;
    assert_eq!(shape.as_deref(), Some("truetruetruetruetrue"));

    let workload = dir.join("workload.sql");
    psql(&[
        "-v",
        "txns=60",
        "-f",
        workload.to_str().expect("UTF-8 path"),
    ]);
    // 60 transactions, 45% of them new invoices: none at all would be a 0.55^60 fluke.
    let inserted = pg
        .query_scalar("select count(*) from ecommerce_sales where id > 2000")
        .await;
    assert_ne!(
        inserted.as_deref(),
        Some("0"),
        "the workload inserted nothing"
    );
}

/// A history of `public.t` written by hand the way pgcdc writes it: out-of-order LSNs (as text),
/// a truncate, a transaction split into parts, gzip and plain files, a later file with its
/// columns in another order, NULL vs "", quotes, commas, CR/LF and unicode; plus files that are
/// not change data. Its replay must equal the table PostgreSQL ends up with.
#[tokio::test(flavor = "multi_thread")]
async fn replay_of_hand_written_files_equals_the_table() {
    let pg = PgCluster::start().await;
    pg.execute(
        "create table t (id int primary key, name text, note text, qty numeric(10,2));
         insert into t values
           (1, 'O''Brien \"Bob\", Jr.', null, 1.50),
           (3, 'ünïcødé ✓', E'cr\\r\\nlf\\nand more', 3.00),
           (4, 'four', '', 4.00);",
    )
    .await;

    let sink = tempfile::tempdir().expect("temp dir");
    let header = "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,name,note,qty\r\n";
    let write = |relative: &str, text: &str| {
        let path = sink.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        if relative.ends_with(".gz") {
            let file = std::fs::File::create(&path).expect("create");
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            gz.write_all(text.as_bytes()).expect("gzip");
            gz.finish().expect("gzip finish");
        } else {
            std::fs::write(&path, text).expect("write");
        }
    };
    let hour0 = "public.t/dt=2026-01-01/hour=00";
    let hour1 = "public.t/dt=2026-01-01/hour=01";
    // LSN 100..150: a row that a truncate then removes.
    write(
        &format!("{hour0}/0000000000000064-0000000000000096.csv"),
        &format!(
            "{header}I,100,0,700,2026-01-01T00:00:01Z,,9,nine,gone,9.00\r\n\
             T,150,0,701,2026-01-01T00:00:02Z,,,,,\r\n"
        ),
    );
    // LSN 200: one transaction in two parts.
    write(
        &format!("{hour0}/00000000000000C8-00000000000000C8.part-0001-of-0002.csv.gz"),
        &format!(
            "{header}I,200,0,702,2026-01-01T00:00:03Z,,1,plain,,1.50\r\n\
             I,200,1,702,2026-01-01T00:00:03Z,,2,\"\",\"say \"\"hi\"\", then\nleave\",2.00\r\n"
        ),
    );
    write(
        &format!("{hour0}/00000000000000C8-00000000000000C8.part-0002-of-0002.csv.gz"),
        &format!(
            "{header}I,200,2,702,2026-01-01T00:00:03Z,,3,ünïcødé ✓,\"cr\r\nlf\nand more\",\r\n"
        ),
    );
    // LSN 300..1000, columns in another order: update, delete (key only), an update leaving
    // the TOASTed `note` unchanged, an insert with an empty string.
    write(
        &format!("{hour1}/000000000000012C-00000000000003E8.csv.gz"),
        "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,qty,note,name,id\n\
         U,300,0,703,2026-01-01T01:00:00Z,,1.50,,\"O'Brien \"\"Bob\"\", Jr.\",1\n\
         D,400,0,704,2026-01-01T01:00:01Z,,,,,2\n\
         U,1000,0,705,2026-01-01T01:00:02Z,\"[\"\"note\"\"]\",3.00,,ünïcødé ✓,3\n\
         I,1000,1,705,2026-01-01T01:00:02Z,,4.00,\"\",four,4\n",
    );
    // Not change data: bookkeeping, a spool file, another table.
    write(
        "_pgcdc/pgcdc/checkpoint.json",
        "{\"commit_lsn\": \"0/3E8\"}",
    );
    write(&format!("{hour1}/.spool-1234.csv"), "garbage\"");
    write(
        "public.other/dt=2026-01-01/hour=00/0000000000000001-0000000000000001.csv",
        "garbage\"",
    );

    let rows = read_change_files(sink.path(), "public.t");
    assert_eq!(rows.len(), 9);
    assert_eq!(duplicate_keys(&rows), 0);
    for row in &rows {
        let relative = row.file.strip_prefix(sink.path()).expect("under the sink");
        parse_file_name(relative).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rows.iter().filter(|r| r.op == 'I').count(), 5);
    let two = rows
        .iter()
        .find(|r| r.op == 'I' && r.get("id") == Some("2"))
        .expect("row 2");
    assert_eq!(two.get("name"), Some(""));
    assert_eq!(two.get("note"), Some("say \"hi\", then\nleave"));
    let one = rows
        .iter()
        .find(|r| r.op == 'I' && r.get("id") == Some("1"))
        .expect("row 1");
    assert_eq!(one.get("note"), None);

    let replayed = replay(&rows, &["id"]);
    let client = pg.client(SHOP_DB).await;
    let table = table_state(&client, "public.t", &["id"]).await;
    assert_eq!(table.len(), 3);
    if let Some(diff) = describe_diff(&table, &replayed) {
        panic!("replay differs from the table: {diff}");
    }

    // And the comparison does notice a difference in NULL vs "".
    pg.execute("update t set note = null where id = 4").await;
    let table = table_state(&client, "public.t", &["id"]).await;
    let diff = describe_diff(&table, &replayed).expect("NULL vs empty string must differ");
    assert!(diff.contains("note: expected NULL, got \"\""), "{diff}");
}
