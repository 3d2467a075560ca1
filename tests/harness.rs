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

/// The harness's pure helpers (CSV reading, replay, file names, config, pg_hba): here, in one
/// test binary, so they run once rather than in every binary that compiles `common`.
mod unit {
    use std::path::Path;

    use crate::common::cluster::{hba_conf, percent_encode};
    use crate::common::{
        ChangeRow, PgcdcConfig, Row, TableState, describe_diff, duplicate_keys, metrics_listen,
        parse_change_file, parse_csv, parse_file_name, replay,
    };

    #[test]
    fn percent_encoding_keeps_unreserved() {
        assert_eq!(percent_encode("secret-pw-pgcdc_md5"), "secret-pw-pgcdc_md5");
        assert_eq!(percent_encode("a b@c:/%"), "a%20b%40c%3A%2F%25");
    }

    #[test]
    fn hba_puts_password_rules_before_trust() {
        let hba = hba_conf(false);
        let md5 = hba.find("pgcdc_md5 127.0.0.1/32 md5").expect("md5 rule");
        let trust = hba.find("all 127.0.0.1/32 trust").expect("trust rule");
        assert!(md5 < trust);
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn csv_keeps_null_and_empty_string_apart() {
        let records = parse_csv("a,,\"\",b\n").expect("valid");
        assert_eq!(records, vec![vec![s("a"), None, s(""), s("b")]]);
    }

    #[test]
    fn csv_quoted_fields_hold_quotes_commas_and_line_breaks() {
        let text = "\"say \"\"hi\"\"\",\"a,b\",\"l1\nl2\",\"cr\r\nlf\",\"ünïcødé ✓\"\r\nx,y,z,w,v";
        let records = parse_csv(text).expect("valid");
        assert_eq!(
            records,
            vec![
                vec![
                    s("say \"hi\""),
                    s("a,b"),
                    s("l1\nl2"),
                    s("cr\r\nlf"),
                    s("ünïcødé ✓")
                ],
                vec![s("x"), s("y"), s("z"), s("w"), s("v")],
            ]
        );
    }

    #[test]
    fn csv_line_endings_and_trailing_fields() {
        assert_eq!(
            parse_csv("").expect("valid"),
            Vec::<Vec<Option<String>>>::new()
        );
        assert_eq!(
            parse_csv("a,\r\nb,\n").expect("valid"),
            vec![vec![s("a"), None], vec![s("b"), None]]
        );
        assert_eq!(
            parse_csv("a\rb").expect("valid"),
            vec![vec![s("a")], vec![s("b")]]
        );
        assert_eq!(parse_csv(",").expect("valid"), vec![vec![None, None]]);
        assert_eq!(parse_csv("\"\"").expect("valid"), vec![vec![s("")]]);
    }

    #[test]
    fn csv_rejects_malformed_quoting() {
        assert!(
            parse_csv("\"open\nnever closed")
                .expect_err("must be rejected")
                .contains("line 1")
        );
        assert!(
            parse_csv("a\nb\"c")
                .expect_err("must be rejected")
                .contains("line 2")
        );
        assert!(
            parse_csv("\"a\"b")
                .expect_err("must be rejected")
                .contains("closing quote")
        );
    }

    fn file(text: &str) -> Vec<ChangeRow> {
        parse_change_file(Path::new("t.csv"), text).expect("valid change file")
    }

    const HEADER: &str = "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,name,note\n";

    #[test]
    fn change_file_columns_are_matched_by_name() {
        let rows = file(&format!("{HEADER}I,10,0,5,2026-01-01T00:00:00Z,,1,\"\",\n"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].op, 'I');
        assert_eq!((rows[0].commit_lsn, rows[0].seq), (10, 0));
        assert_eq!(rows[0].get("name"), Some(""));
        assert_eq!(rows[0].get("note"), None);
        assert_eq!(rows[0].columns, ["id", "name", "note"]);
    }

    #[test]
    fn change_file_errors_name_the_record() {
        let err = parse_change_file(Path::new("f.csv"), &format!("{HEADER}I,0/10,0,5,,,1,a,b\n"))
            .expect_err("must be rejected");
        assert!(
            err.contains("f.csv record 1") && err.contains("_commit_lsn"),
            "{err}"
        );
        let err = parse_change_file(Path::new("f.csv"), &format!("{HEADER}X,1,0,5,,,1,a,b\n"))
            .expect_err("must be rejected");
        assert!(err.contains("_op"), "{err}");
        let err =
            parse_change_file(Path::new("f.csv"), "id,name\n1,a\n").expect_err("must be rejected");
        assert!(err.contains("header must start"), "{err}");
        let err = parse_change_file(Path::new("f.csv"), &format!("{HEADER}I,1,0,5,,,1,a\n"))
            .expect_err("must be rejected");
        assert!(err.contains("8 fields"), "{err}");
    }

    #[test]
    fn replay_orders_by_numeric_lsn_then_seq() {
        // As text, "10" < "9"; as numbers the update at LSN 10 comes last.
        let rows = file(&format!(
            "{HEADER}U,10,0,6,,,1,second,\nI,9,1,5,,,1,first,\nI,9,0,5,,,2,x,\n"
        ));
        let state = replay(&rows, &["id"]);
        assert_eq!(state.len(), 2);
        assert_eq!(state[&vec![s("1")]]["name"], s("second"));
        assert_eq!(duplicate_keys(&rows), 0);
    }

    #[test]
    fn replay_applies_unchanged_deletes_and_truncates() {
        let rows = file(&format!(
            "{HEADER}\
             R,1,0,,,,1,a,big toasted value\n\
             R,1,1,,,,2,b,\n\
             U,5,0,7,,\"[\"\"note\"\"]\",1,a2,\n\
             D,6,0,8,,,2,,\n\
             T,7,0,9,,,,,\n\
             I,8,0,10,,,3,c,\"\"\n\
             U,9,0,11,,\"[\"\"note\"\"]\",3,c2,\n"
        ));
        let before_truncate: Vec<ChangeRow> =
            rows.iter().filter(|r| r.commit_lsn < 7).cloned().collect();
        let state = replay(&before_truncate, &["id"]);
        assert_eq!(state.len(), 1, "{state:?}");
        let one = &state[&vec![s("1")]];
        assert_eq!(one["name"], s("a2"));
        assert_eq!(
            one["note"],
            s("big toasted value"),
            "unchanged column carried forward"
        );

        let state = replay(&rows, &["id"]);
        assert_eq!(state.len(), 1, "{state:?}");
        assert_eq!(state[&vec![s("3")]]["note"], s(""));
    }

    #[test]
    fn an_unchanged_value_follows_its_row_through_key_changes() {
        // Key 1 -> 2 -> 3, the toasted note never sent again; a delete of key 4 followed by an
        // unrelated update in a later commit is no key change.
        let rows = file(&format!(
            "{HEADER}\
             I,1,0,5,,,1,a,big toasted value\n\
             D,2,0,6,,,1,,\n\
             U,2,1,6,,\"[\"\"note\"\"]\",2,b,\n\
             D,3,0,7,,,2,,\n\
             U,3,1,7,,\"[\"\"note\"\"]\",3,c,\n\
             I,4,0,8,,,4,d,x\n\
             D,5,0,9,,,4,,\n\
             U,6,0,10,,\"[\"\"note\"\"]\",5,e,\n"
        ));
        let state = replay(&rows, &["id"]);
        assert_eq!(state[&vec![s("3")]]["note"], s("big toasted value"));
        assert!(!state[&vec![s("5")]].contains_key("note"), "{state:?}");
        assert_eq!(state.len(), 2, "{state:?}");
    }

    #[test]
    fn duplicates_are_counted_and_replay_idempotently() {
        let text = format!("{HEADER}I,3,0,1,,,1,a,\nI,3,1,1,,,2,b,\n");
        let mut rows = file(&text);
        rows.extend(file(&text));
        assert_eq!(duplicate_keys(&rows), 2);
        assert_eq!(replay(&rows, &["id"]), replay(&file(&text), &["id"]));
    }

    #[test]
    fn file_names_follow_the_layout() {
        let name = parse_file_name(Path::new(
            "public.t/dt=2026-01-02/hour=07/0000000001A2B3C4-0000000001A2B3FF.part-0002-of-0003.csv.gz",
        ))
        .expect("valid");
        assert_eq!(name.table, "public.t");
        assert_eq!((name.dt.as_str(), name.hour.as_str()), ("2026-01-02", "07"));
        assert_eq!(name.part, Some((2, 3)));
        assert!(name.gzip);
        let plain = parse_file_name(Path::new(
            "public.t/dt=2026-01-02/hour=23/00000010-00000020.csv",
        ))
        .expect("valid");
        assert_eq!(
            (plain.first.as_str(), plain.part, plain.gzip),
            ("00000010", None, false)
        );
        assert!(parse_file_name(Path::new("public.t/dt=2026-1-2/hour=07/1-2.csv")).is_err());
        assert!(parse_file_name(Path::new("public.t/dt=2026-01-02/hour=24/1-2.csv")).is_err());
        assert!(parse_file_name(Path::new("public.t/dt=2026-01-02/hour=07/1-2.json")).is_err());
    }

    #[test]
    fn diff_names_missing_extra_and_changed_keys() {
        let row = |v: &str| Row::from([("id".to_owned(), s(v))]);
        let a = TableState::from([(vec![s("1")], row("1")), (vec![s("2")], row("2"))]);
        let mut b = TableState::from([(vec![s("1")], row("x")), (vec![s("3")], row("3"))]);
        let diff = describe_diff(&a, &b).expect("differs");
        assert!(diff.starts_with("3 keys differ"), "{diff}");
        assert!(
            diff.contains("missing key") && diff.contains("unexpected key"),
            "{diff}"
        );
        b = a.clone();
        assert_eq!(describe_diff(&a, &b), None);
    }

    #[test]
    fn config_round_trips_through_toml() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = PgcdcConfig::new("postgres://u:p\"w@127.0.0.1:5/shop")
            .set("source.slot", "s1")
            .set("source.publication", "pub")
            .local_sink(&dir.path().join("stage"))
            .set("batch.window", "2s")
            .set("batch.max_file_bytes", "1MiB")
            .set("batch.format", "csv")
            .write(&dir.path().join("pgcdc.toml"));
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

    #[test]
    fn config_edits_replace_keys_and_add_sections() {
        let config = PgcdcConfig::new("postgres://h/db")
            .edit("batch.window = \"5s\"")
            .edit("sinks.url = \"x\"")
            .lines("source", "failover = true\n\nstatus_interval = \"1s\"\n")
            .unset("source.publication");
        let table: toml::Table = toml::from_str(&config.text()).expect("valid TOML");
        assert_eq!(table["batch"]["window"].as_str(), Some("5s"));
        assert_eq!(table["sinks"]["url"].as_str(), Some("x"));
        assert_eq!(table["source"]["failover"].as_bool(), Some(true));
        assert_eq!(table["source"]["status_interval"].as_str(), Some("1s"));
        assert!(table["source"].get("publication").is_none());
        assert_eq!(config.text().matches("window =").count(), 1);
    }
}
