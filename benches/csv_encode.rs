//! CSV encoding throughput of change rows (quoting, NULL vs "", metadata columns). Prints MB/s
//! of CSV produced.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgcdc::changes::{ChangeRow, ColumnInfo, Field, Op, Table, TxnMeta};
use pgcdc::encode::{encode_row, format_commit_ts};
use pgcdc::lsn::Lsn;

fn table() -> Arc<Table> {
    let names = [
        "id",
        "invoice_no",
        "stock_code",
        "description",
        "quantity",
        "invoice_date",
        "unit_price",
        "customer_id",
        "country",
    ];
    Arc::new(Table {
        schema: "public".into(),
        name: "ecommerce_sales".into(),
        columns: names
            .iter()
            .map(|n| ColumnInfo {
                name: (*n).into(),
                type_name: "text".into(),
                type_oid: 25,
                type_modifier: -1,
                is_key: *n == "id",
            })
            .collect(),
    })
}

fn encode(c: &mut Criterion) {
    let table = table();
    let text = |s: &'static str| Field::Text(Bytes::from_static(s.as_bytes()));
    let rows: Vec<ChangeRow> = (0..10_000u64)
        .map(|seq| ChangeRow {
            table: table.clone(),
            op: Op::Insert,
            seq,
            fields: vec![
                text("123456"),
                text("536365"),
                text("85123A"),
                // Every fourth description needs quoting, every tenth is NULL.
                if seq % 10 == 0 {
                    Field::Null
                } else if seq % 4 == 0 {
                    text("SET 3 \"RETROSPOT\" CAKE CASES, RED")
                } else {
                    text("WHITE HANGING HEART T-LIGHT HOLDER")
                },
                text("6"),
                text("2010-12-01 08:26:00"),
                text("2.55"),
                text("17850"),
                text("United Kingdom"),
            ],
        })
        .collect();
    let meta = TxnMeta {
        xid: Some(7421),
        commit_lsn: Lsn::new(0x16_B374_D848),
        commit_ts: 0,
    };
    let ts = format_commit_ts(meta.commit_ts);
    let mut out = Vec::with_capacity(2 << 20);
    for row in &rows {
        encode_row(&mut out, &meta, &ts, row);
    }
    let mut group = c.benchmark_group("csv");
    group.throughput(Throughput::Bytes(out.len() as u64));
    group.bench_function("encode_row_x10000", |b| {
        b.iter(|| {
            out.clear();
            for row in &rows {
                encode_row(&mut out, &meta, &ts, row);
            }
            std::hint::black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
