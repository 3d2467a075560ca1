//! The S3 sink end to end: a real PostgreSQL cluster, the real `pgcdc` binary and moto's S3
//! server on 127.0.0.1. What pgcdc uploads is downloaded and replayed against the table.

mod common;

use std::time::Duration;

use common::s3::{MotoServer, Outage, SECRET_KEY, aws_env};
use common::*;

const DEADLINE: Duration = Duration::from_secs(120);
const BUCKET: &str = "pgcdc-test";
const PREFIX: &str = "cdc/shop";

const SALES_DDL: &str = "
    create table public.sales (
        id bigint primary key,
        note text,
        qty integer,
        price numeric(10,2)
    );
    create publication pgcdc_pub for table public.sales;
";

/// The suite's fixture: `public.sales` streamed into `s3://pgcdc-test/cdc/shop` on moto.
async fn fixture() -> Fixture {
    Fixture::builder()
        .ddl(SALES_DDL)
        .table("public.sales", &["id"])
        .moto(BUCKET, PREFIX)
        .window("1s")
        .format("csv.gz")
        .deadline(DEADLINE)
        .start()
        .await
}

async fn write_batch(cluster: &PgCluster, first: i64, count: i64) {
    cluster
        .execute(&format!(
            "insert into public.sales (id, note, qty, price)
             select g, 'note, \"' || g || '\"', g % 10, g / 10.0 from generate_series({first}, {last}) g;
             update public.sales set qty = -1 where id % 7 = 0 and id between {first} and {last};
             delete from public.sales where id % 11 = 0 and id between {first} and {last};",
            last = first + count - 1
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_checkpoint_land_in_s3_and_replay_to_the_table() {
    let setup = fixture().await;
    write_batch(&setup.cluster, 1, 500).await;
    let config = setup.s3_config(&setup.moto().endpoint(), "");
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("S3 sink ready", DEADLINE).await;
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    for round in 0..5 {
        write_batch(&setup.cluster, 1000 + round * 100, 100).await;
    }
    let rows = setup
        .wait_replay_matches("the S3 replay equals the table")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_eq!(duplicate_keys(&rows), 0);
    assert!(rows.iter().any(|r| r.op == 'R'));
    assert!(rows.iter().any(|r| r.op == 'D'));

    let keys: Vec<String> = setup
        .moto()
        .list(BUCKET, PREFIX)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.contains(&format!("{PREFIX}/_pgcdc/pgcdc/checkpoint.json")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .filter(|k| !k.contains("/_pgcdc/") && !k.contains("/_schema/"))
            .all(|k| k.starts_with(&format!("{PREFIX}/public.sales/dt=")) && k.ends_with(".csv.gz")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(
            |k| k.starts_with(&format!("{PREFIX}/public.sales/_schema/")) && k.ends_with(".json")
        ),
        "the table's schema file is uploaded: {keys:?}"
    );
    let output = pgcdc.output_text();
    assert!(output.contains("credentials=Environment"), "{output}");
    assert!(!output.contains(SECRET_KEY), "the secret key leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_above_the_threshold_goes_up_in_parts() {
    let setup = fixture().await;
    let config = setup.s3_config(
        &setup.moto().endpoint(),
        "multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"",
    );
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("format = \"csv.gz\"", "format = \"csv\"");
    std::fs::write(&config, text).expect("config");
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // About 15 MiB of CSV in one transaction: several parts of at most 5 MiB.
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, repeat('x', 100), 1, 1 from generate_series(1, 120000) g",
        )
        .await;
    setup
        .wait_replay_matches("the multipart file replays")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let objects: Vec<_> = setup
        .moto()
        .list(BUCKET, &format!("{PREFIX}/public.sales/dt="))
        .await;
    // The big transaction's file, beside the small files of the copy's B and E rows.
    let multipart: Vec<_> = objects
        .iter()
        .filter(|(_, etag)| etag.trim_matches('"').contains('-'))
        .collect();
    assert_eq!(multipart.len(), 1, "{objects:?}");
    let (_, etag) = multipart[0];
    // A multipart upload's ETag ends with "-<number of parts>".
    let parts: u32 = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    assert!(parts >= 3, "expected a multipart ETag, got {etag}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_is_ridden_out_without_loss_or_duplicates() {
    let setup = fixture().await;
    let outage = Outage::start(setup.moto().port()).await;
    let config = setup.s3_config(&outage.endpoint(), "");
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    write_batch(&setup.cluster, 1, 200).await;
    setup
        .wait_replay_matches("files land before the outage")
        .await;

    outage.take_down().await;
    let flush_before = setup
        .cluster
        .query_scalar(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'pgcdc'",
        )
        .await;
    for round in 0..10 {
        write_batch(&setup.cluster, 1000 + round * 100, 100).await;
    }
    pgcdc
        .wait_output("S3 request failed; retrying", DEADLINE)
        .await;
    // The outage itself lasts 30 s; this is the fault, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        pgcdc.try_exit().is_none(),
        "pgcdc must ride out the outage:\n{}",
        pgcdc.output_text()
    );
    let slot = setup
        .cluster
        .query_scalar("select active::text || ' ' || confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'pgcdc'")
        .await
        .expect("slot row");
    assert_eq!(
        Some(slot.split(' ').nth(1).unwrap_or_default().to_owned()),
        flush_before,
        "nothing may be acknowledged while S3 is down"
    );
    assert!(slot.starts_with("true"), "pgcdc keeps its slot: {slot}");

    outage.bring_back().await;
    let rows = setup
        .wait_replay_matches("after the outage the replay equals the table")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_eq!(duplicate_keys(&rows), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_bucket_and_wrong_credentials_fail_clearly() {
    let setup = fixture().await;
    // A missing bucket.
    let config = setup.s3_config(&setup.moto().endpoint(), "");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&format!("s3://{BUCKET}/"), "s3://no-such-bucket-here/");
    std::fs::write(&config, text).expect("config");
    let mut pgcdc = setup.run(&config);
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(!status.success(), "{output}");
    assert!(output.contains("no-such-bucket-here"), "{output}");
    assert!(output.contains("HTTP 404"), "{output}");
    assert!(!output.contains(SECRET_KEY), "{output}");

    // Credentials the server does not know (moto checks them when told to).
    let strict = MotoServer::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    let config = setup.s3_config(&strict.endpoint(), "");
    let mut pgcdc = setup.run(&config);
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(!status.success(), "{output}");
    assert!(output.contains(BUCKET), "{output}");
    assert!(output.contains("HTTP 403"), "{output}");
    assert!(!output.contains(SECRET_KEY), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_resolved_sink_and_never_the_secret() {
    let setup = fixture().await;
    let config = setup.s3_config(&setup.moto().endpoint(), "");
    let output = pgcdc_output(
        ["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &aws_env(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("region us-east-1"), "{text}");
    assert!(
        text.contains(&format!("endpoint {}", setup.moto().endpoint())),
        "{text}"
    );
    assert!(text.contains("credentials from Environment"), "{text}");
    assert!(text.contains("is writable"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    assert!(!text.contains(SECRET_KEY), "{text}");

    let mut envs = aws_env();
    envs.push(("PGCDC_SOURCE_PUBLICATION", "missing_pub"));
    let output = pgcdc_output(
        ["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &envs,
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("FAIL  publication  publication \"missing_pub\" does not exist"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_uploaded_file_raises_one_s3_event_for_the_snowpipe_queue() {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    use common::s3::{sqs, url_decode};
    use serde_json::json;

    let setup = fixture().await;
    let port = setup.moto().port();
    let queue = sqs(port, "CreateQueue", json!({"QueueName": "snowpipe"})).await;
    let queue_url = queue["QueueUrl"].as_str().expect("queue url").to_owned();
    let attributes = sqs(
        port,
        "GetQueueAttributes",
        json!({"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]}),
    )
    .await;
    let queue_arn = attributes["Attributes"]["QueueArn"]
        .as_str()
        .expect("queue arn")
        .to_owned();
    // The notification Snowflake's pipe needs (snowflake/aws/s3_notification.json): data files
    // of one table only, never pgcdc's bookkeeping.
    let table_prefix = format!("{PREFIX}/public.sales/");
    let filter = S3KeyFilter::builder()
        .filter_rules(
            FilterRule::builder()
                .name(FilterRuleName::Prefix)
                .value(&table_prefix)
                .build(),
        )
        .filter_rules(
            FilterRule::builder()
                .name(FilterRuleName::Suffix)
                .value(".csv.gz")
                .build(),
        )
        .build();
    setup
        .moto()
        .client()
        .put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(&queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(filter)
                                .build(),
                        )
                        .build()
                        .expect("queue configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("bucket notification configuration");

    write_batch(&setup.cluster, 1, 300).await;
    let config = setup.s3_config(&setup.moto().endpoint(), "");
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    for round in 0..4 {
        write_batch(&setup.cluster, 1000 + round * 100, 100).await;
    }
    setup.wait_replay_matches("files land").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    let uploaded: Vec<String> = setup
        .moto()
        .list(BUCKET, &table_prefix)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.ends_with(".csv.gz"))
        .collect();
    assert!(uploaded.len() >= 2, "{uploaded:?}");
    let mut notified = Vec::new();
    loop {
        let batch = sqs(
            port,
            "ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 600}),
        )
        .await;
        let Some(messages) = batch["Messages"].as_array().filter(|m| !m.is_empty()) else {
            break;
        };
        for message in messages {
            let body: serde_json::Value =
                serde_json::from_str(message["Body"].as_str().unwrap_or("{}")).expect("event");
            for record in body["Records"].as_array().into_iter().flatten() {
                assert!(
                    record["eventName"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("ObjectCreated")),
                    "{record}"
                );
                notified.push(url_decode(
                    record["s3"]["object"]["key"].as_str().unwrap_or(""),
                ));
            }
        }
    }
    notified.sort();
    assert_eq!(
        notified, uploaded,
        "one event per uploaded data file, none for bookkeeping"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_metrics_rise_while_s3_is_down_and_fall_back_after() {
    use common::http::{get, sample, total};

    let setup = fixture().await;
    let outage = Outage::start(setup.moto().port()).await;
    let config = setup.s3_config(&outage.endpoint(), "");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[metrics]\n",
        "[metrics]\npoll_interval = \"200ms\"\nready_max_lag_bytes = \"64KiB\"\n",
    );
    std::fs::write(&config, text).expect("config");
    let addr = metrics_listen(&config);
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;

    let scrape = || async { get(&addr, "/metrics").await.map(|(_, body)| body) };
    let ready = || async { get(&addr, "/readyz").await.map(|(status, _)| status) };
    assert_eq!(get(&addr, "/healthz").await.map(|(s, _)| s), Some(200));
    wait_until("ready once streaming with little lag", DEADLINE, || async {
        (ready().await == Some(200)).then_some(())
    })
    .await;
    // The first copy's watermarks are WAL too: once the slot confirms all of it, pgcdc has no
    // checkpoint left to write before the outage's changes arrive.
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    setup
        .cluster
        .wait_slot_confirms_now(
            "pgcdc",
            "the slot confirms everything written so far",
            DEADLINE,
        )
        .await;

    outage.take_down().await;
    for round in 0..10 {
        write_batch(&setup.cluster, 1000 + round * 100, 100).await;
    }
    let lagging = wait_until(
        "lag rises above 64 KiB while S3 is down",
        DEADLINE,
        || async {
            let body = scrape().await?;
            let lag = sample(&body, "pgcdc_replication_lag_bytes")?;
            let errors = total(&body, "pgcdc_sink_errors_total")?;
            // The window's age is not required: when S3 goes away during an idle checkpoint
            // write (an acknowledgement of WAL with nothing for pgcdc), the pipeline waits on
            // that write and the changes wait in the channel, in no window yet.
            (lag > 65536.0 && errors > 0.0).then_some(body)
        },
    )
    .await;
    assert_eq!(sample(&lagging, "pgcdc_streaming"), Some(1.0), "{lagging}");
    assert_eq!(
        sample(&lagging, "pgcdc_slot_active"),
        Some(1.0),
        "{lagging}"
    );
    assert_eq!(
        ready().await,
        Some(503),
        "not ready while lag is above the bound"
    );

    outage.bring_back().await;
    let recovered = wait_until("lag falls back once S3 returns", DEADLINE, || async {
        let body = scrape().await?;
        let lag = sample(&body, "pgcdc_replication_lag_bytes")?;
        (lag < 65536.0 && ready().await == Some(200)).then_some(body)
    })
    .await;
    assert!(
        sample(&recovered, "pgcdc_acknowledged_lsn") >= sample(&lagging, "pgcdc_acknowledged_lsn"),
        "{recovered}"
    );
    assert!(sample(&recovered, "pgcdc_files_written_total").unwrap_or(0.0) > 0.0);
    assert!(recovered.contains("slot=\"pgcdc\""), "{recovered}");
    pgcdc.stop_cleanly(DEADLINE).await;
}
