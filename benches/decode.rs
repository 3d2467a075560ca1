//! pgoutput decoding throughput: Insert messages shaped like an `ecommerce_sales` row, the bulk
//! of any change stream. Prints MB/s of pgoutput bytes.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgcdc::pgoutput;

/// An Insert message ('I', relation id, 'N', tuple) with text values, built by hand as the
/// server would send it.
fn insert_message() -> Bytes {
    let values: [&[u8]; 9] = [
        b"123456",
        b"536365",
        b"85123A",
        b"WHITE HANGING HEART T-LIGHT HOLDER",
        b"6",
        b"2010-12-01 08:26:00",
        b"2.55",
        b"17850",
        b"United Kingdom",
    ];
    let mut b = BytesMut::new();
    b.put_u8(b'I');
    b.put_u32(16384);
    b.put_u8(b'N');
    b.put_u16(values.len() as u16);
    for v in values {
        b.put_u8(b't');
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
    b.freeze()
}

fn decode(c: &mut Criterion) {
    let message = insert_message();
    let batch: Vec<Bytes> = (0..10_000).map(|_| message.clone()).collect();
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group("pgoutput");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("decode_insert_x10000", |b| {
        b.iter(|| {
            for m in &batch {
                let decoded = pgoutput::decode(m, false);
                std::hint::black_box(&decoded);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
