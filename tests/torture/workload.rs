//! A randomised write workload on `public.ecommerce_sales`, driven by a seeded RNG.
//!
//! It keeps writing while faults hit pgcdc and PostgreSQL: when its connection dies (a server
//! restart) it reconnects and goes on. What it committed is not tracked; the suite compares
//! pgcdc's files with the table as it finally is, which is the only truth after a crash of a
//! server running with `synchronous_commit=off`.
//!
//! The mix covers what a change stream must get right: small and large transactions (the large
//! ones are streamed by the server while in progress), updates that leave a TOASTed value
//! unchanged, key changes, deletes, truncates, rolled-back transactions and savepoints, and text
//! full of CSV's enemies (quotes, commas, newlines, `\N`, unicode, NULL next to '').

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::common::SHOP_DB;
use crate::common::cluster::try_client;

/// The source table (the project's own DDL) and its publication.
pub const SETUP_SQL: &str = concat!(
    include_str!("../../replication_setup/001_ecommerce_sales.sql"),
    "\ncreate publication pgcdc_pub for table public.ecommerce_sales;\n"
);

pub const TABLE: &str = "public.ecommerce_sales";

/// What the workload did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct WorkloadStats {
    pub committed: u64,
    pub rolled_back: u64,
    /// Transactions cut short by a fault (their outcome is whatever the server decided).
    pub interrupted: u64,
    pub large: u64,
    pub truncates: u64,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    task: JoinHandle<WorkloadStats>,
}

impl Workload {
    pub fn start(port: u16, seed: u64, max_truncates: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(port, seed, max_truncates, stop.clone()));
        Workload { stop, task }
    }

    /// Lets the transaction in flight finish and returns the statistics.
    pub async fn stop(self) -> WorkloadStats {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the workload task panicked")
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Insert,
    Update,
    UpdateQuantityOnly,
    Toast,
    KeyChange,
    Delete,
    Large,
    RolledBack,
    Savepoint,
    Truncate,
}

/// Weights out of 1000.
const MIX: &[(Kind, u32)] = &[
    (Kind::Insert, 455),
    (Kind::Update, 140),
    (Kind::UpdateQuantityOnly, 110),
    (Kind::Toast, 30),
    (Kind::KeyChange, 30),
    (Kind::Delete, 100),
    (Kind::Large, 3),
    (Kind::RolledBack, 70),
    (Kind::Savepoint, 59),
    (Kind::Truncate, 3),
];

fn pick(rng: &mut fastrand::Rng) -> Kind {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.u32(0..total);
    for (kind, weight) in MIX {
        if roll < *weight {
            return *kind;
        }
        roll -= weight;
    }
    Kind::Insert
}

async fn run(port: u16, seed: u64, max_truncates: u64, stop: Arc<AtomicBool>) -> WorkloadStats {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stats = WorkloadStats::default();
    let mut high_id: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(client) = try_client(port, SHOP_DB).await else {
            // The server is down (a restart fault): pace the retries.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut count: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            if count.is_multiple_of(50) {
                match client
                    .query_one("select coalesce(max(id), 0) from ecommerce_sales", &[])
                    .await
                {
                    Ok(row) => high_id = row.get(0),
                    Err(_) => break,
                }
            }
            count += 1;
            let mut kind = pick(&mut rng);
            if matches!(kind, Kind::Truncate) && stats.truncates >= max_truncates {
                kind = Kind::Insert;
            }
            match transaction(&client, kind, &mut rng, high_id).await {
                Ok(true) => {
                    stats.committed += 1;
                    match kind {
                        Kind::Large => stats.large += 1,
                        Kind::Truncate => stats.truncates += 1,
                        _ => {}
                    }
                }
                Ok(false) => stats.rolled_back += 1,
                Err(_) => {
                    stats.interrupted += 1;
                    break;
                }
            }
            // Pacing, so the stream has gaps and windows close at varied points.
            tokio::time::sleep(Duration::from_millis(rng.u64(0..4))).await;
        }
    }
    stats
}

const INSERT: &str = "insert into ecommerce_sales \
    (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country) \
    values ($1, $2, $3, $4::text::int, $5::text::timestamp, $6::text::numeric, $7::text::int, $8)";

/// Rows at or after a random id: the targets of updates and deletes.
const TARGETS: &str = "id in (select id from ecommerce_sales where id >= $1::text::bigint order by id limit $2::text::int)";

/// Runs one transaction; `Ok(true)` committed, `Ok(false)` rolled back on purpose.
async fn transaction(
    client: &Client,
    kind: Kind,
    rng: &mut fastrand::Rng,
    high_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let start = rng.i64(0..=high_id.max(1)).to_string();
    let few = rng.u32(1..=10).to_string();
    client.batch_execute("begin").await?;
    let commit = match kind {
        Kind::Insert => {
            for _ in 0..rng.usize(1..=20) {
                insert_row(client, rng).await?;
            }
            true
        }
        Kind::Update => {
            let description = description(rng);
            let quantity = rng.i32(-50..500).to_string();
            let sql = format!(
                "update ecommerce_sales set description = $3, quantity = $4::text::int, \
                 unit_price = unit_price + 1 where {TARGETS}"
            );
            client
                .execute(&sql, &[&start, &few, &description, &quantity])
                .await?;
            true
        }
        Kind::UpdateQuantityOnly => {
            // Leaves the description alone: a TOASTed one arrives as "unchanged".
            let sql = format!("update ecommerce_sales set quantity = quantity + 1 where {TARGETS}");
            client.execute(&sql, &[&start, &few]).await?;
            true
        }
        Kind::Toast => {
            // ~6 kB of poorly compressible text: stored out of line.
            let sql = format!(
                "update ecommerce_sales set description = \
                 (select string_agg(md5(random()::text), ',' ) from generate_series(1, 200)) \
                 where {TARGETS}"
            );
            client.execute(&sql, &[&start, &"1".to_owned()]).await?;
            true
        }
        Kind::KeyChange => {
            let sql = format!("update ecommerce_sales set id = default where {TARGETS}");
            client.execute(&sql, &[&start, &"1".to_owned()]).await?;
            true
        }
        Kind::Delete => {
            let sql = format!("delete from ecommerce_sales where {TARGETS}");
            client.execute(&sql, &[&start, &few]).await?;
            true
        }
        Kind::Large => {
            let rows = rng.u32(1_000..10_000).to_string();
            client
                .execute(
                    "insert into ecommerce_sales \
                     (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country) \
                     select lpad((g % 999999)::text, 6, '0'), 'BIG' || g, \
                            case g % 5 when 0 then null when 1 then '' \
                                 else 'big, \"row\" ' || g || E'\\nline two \u{fc}' end, \
                            g % 50, timestamp '2024-01-01' + g * interval '1 second', \
                            (g % 1000) / 10.0, nullif(g % 7, 0), 'Country ' || (g % 9) \
                     from generate_series(1, $1::text::int) g",
                    &[&rows],
                )
                .await?;
            true
        }
        Kind::RolledBack => {
            insert_row(client, rng).await?;
            let sql = format!("delete from ecommerce_sales where {TARGETS}");
            client.execute(&sql, &[&start, &few]).await?;
            false
        }
        Kind::Savepoint => {
            insert_row(client, rng).await?;
            client.batch_execute("savepoint s1").await?;
            insert_row(client, rng).await?;
            let sql = format!("update ecommerce_sales set country = 'gone' where {TARGETS}");
            client.execute(&sql, &[&start, &few]).await?;
            client.batch_execute("rollback to savepoint s1").await?;
            insert_row(client, rng).await?;
            true
        }
        Kind::Truncate => {
            client.batch_execute("truncate ecommerce_sales").await?;
            true
        }
    };
    client
        .batch_execute(if commit { "commit" } else { "rollback" })
        .await?;
    Ok(commit)
}

async fn insert_row(client: &Client, rng: &mut fastrand::Rng) -> Result<(), tokio_postgres::Error> {
    let cancelled = rng.u8(0..10) == 0;
    let invoice_no = format!(
        "{}{:06}",
        if cancelled { "C" } else { "" },
        rng.u32(0..1_000_000)
    );
    let stock_code = text(rng);
    let description = description(rng);
    let quantity = rng.i32(-100..1000).to_string();
    let invoice_date = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        rng.u32(2009..2026),
        rng.u32(1..=12),
        rng.u32(1..=28),
        rng.u32(0..24),
        rng.u32(0..60),
        rng.u32(0..60),
        rng.u32(0..1_000_000)
    );
    let unit_price = format!("{}.{:02}", rng.i32(-100..10_000), rng.u32(0..100));
    let customer_id = (rng.u8(0..4) != 0).then(|| rng.u32(10_000..20_000).to_string());
    let country = text(rng);
    let params: [&(dyn ToSql + Sync); 8] = [
        &invoice_no,
        &stock_code,
        &description,
        &quantity,
        &invoice_date,
        &unit_price,
        &customer_id,
        &country,
    ];
    client.execute(INSERT, &params).await?;
    Ok(())
}

/// Pieces of text that break naive CSV writers and readers.
const PIECES: &[&str] = &[
    "plain",
    "WHITE HANGING HEART",
    "comma, inside",
    "a \"quoted\" word",
    "it's",
    "two\nlines",
    "crlf\r\nend",
    "tab\there",
    "back\\slash",
    "\\N",
    "NULL",
    "  padded  ",
    "\u{fc}n\u{ef}c\u{f8}d\u{e9}",
    "\u{65e5}\u{672c}\u{8a9e}",
    "crab \u{1f980}",
    ",",
    "\"",
];

fn text(rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(1..=3);
    (0..n)
        .map(|_| PIECES[rng.usize(0..PIECES.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// NULL one time in ten, the empty string one time in ten, text otherwise.
fn description(rng: &mut fastrand::Rng) -> Option<String> {
    match rng.u8(0..10) {
        0 => None,
        1 => Some(String::new()),
        _ => Some(text(rng)),
    }
}
