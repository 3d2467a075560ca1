//! The fuzz corpus of the pgoutput decoder (`fuzz/corpus/pgoutput_decoder/`): real pgoutput
//! captured from a test cluster, one file per transaction, each message a big-endian u32 length
//! and its bytes (the input format of `fuzz/fuzz_targets/pgoutput_decoder.rs`).
//!
//! - `the_committed_corpus_is_pgoutput_the_decoder_reads` (in `make test`) decodes every message
//!   of every file: the corpus really is what it claims, and the decoder still reads it.
//! - `capture_corpus` (ignored) writes it anew:
//!   `cargo test --test fuzz_corpus -- --ignored capture_corpus`.
//!
//! The capture goes through `pg_logical_slot_peek_binary_changes`, the SQL face of the same
//! output plugin, with the options pgcdc asks for (protocol 2, messages); a file starts with
//! every Relation and Type message seen before it, so the fuzzer begins from states where rows
//! really decode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::{PgCluster, SHOP_DB, SUPERUSER};
use pgcdc::changes::Assembler;
use pgcdc::pgoutput::{self, Message};

/// Fuzz inputs stay small: libFuzzer mutates small inputs much faster.
const MAX_MESSAGE: usize = 16 * 1024;
const MAX_FILE: usize = 64 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pgoutput_decoder")
}

/// The length-prefixed messages of one corpus file.
fn messages(bytes: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        assert!(len <= tail.len(), "a corpus file is cut short");
        let (message, tail) = tail.split_at(len);
        out.push(Bytes::copy_from_slice(message));
        rest = tail;
    }
    assert!(rest.is_empty(), "trailing bytes in a corpus file");
    out
}

#[test]
fn the_committed_corpus_is_pgoutput_the_decoder_reads() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/pgoutput_decoder exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} corpus files", files.len());
    let (mut decoded, mut rows) = (0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("reading a corpus file");
        let mut assembler = Assembler::new(true);
        let mut changes = Vec::new();
        let mut in_stream = false;
        for message in messages(&bytes) {
            let message = pgoutput::decode(&message, in_stream)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            kinds.insert(message.kind());
            match &message {
                Message::StreamStart(_) => in_stream = true,
                Message::StreamStop => in_stream = false,
                _ => {}
            }
            decoded += 1;
            // Streamed transactions are pgcdc's spool's business, not the assembler's.
            let streaming = matches!(
                message,
                Message::StreamStart(_)
                    | Message::StreamStop
                    | Message::StreamCommit(_)
                    | Message::StreamAbort(_)
            );
            if !in_stream && !streaming {
                assembler
                    .apply(message, &mut changes)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                rows += changes.len();
                changes.clear();
            }
        }
    }
    for kind in [
        "Begin",
        "Commit",
        "Relation",
        "Type",
        "Insert",
        "Update",
        "Delete",
        "Truncate",
        "Message",
        "Stream Start",
        "Stream Stop",
        "Stream Commit",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} message in the corpus: {kinds:?}"
        );
    }
    println!(
        "{} files, {decoded} messages, {rows} changes; kinds: {kinds:?}",
        files.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "rewrites fuzz/corpus/pgoutput_decoder: run by hand"]
async fn capture_corpus() {
    let cluster = PgCluster::start_with(&[("logical_decoding_work_mem", "64kB")]).await;
    // One statement per call: a multi-statement batch is one implicit transaction.
    cluster
        .execute("create publication corpus_pub for all tables")
        .await;
    cluster
        .execute("select pg_create_logical_replication_slot('corpus', 'pgoutput')")
        .await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    psql(
        &cluster,
        &["-v", "phase=all", "-f"],
        &repo.join("replication_setup/type_zoo.sql"),
    );
    psql(
        &cluster,
        &["-f"],
        &repo.join("replication_setup/001_ecommerce_sales.sql"),
    );
    for statement in [
            "insert into ecommerce_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
             values ('536365', '85123A', 'WHITE HANGING HEART, \"T-LIGHT\"', 6, '2010-12-01 08:26', 2.55, 17850, 'United Kingdom'),
                    ('C536379', 'D', null, -1, '2010-12-01 09:41', 27.50, null, '');
             update ecommerce_sales set quantity = 7 where invoice_no = '536365';
             alter table ecommerce_sales replica identity full;
             update ecommerce_sales set description = 'changed' where invoice_no = 'C536379';
             alter table ecommerce_sales replica identity default;
             delete from ecommerce_sales where invoice_no = 'C536379';
             create table toasty (id int primary key, big text, n int);
             insert into toasty select 1, string_agg(md5(g::text), '') from generate_series(1, 400) g;
             update toasty set n = 1;
             update toasty set id = 2;
             alter table toasty add column extra numeric(8,3) default 1.5;
             update toasty set extra = 2.25;
             select pg_logical_emit_message(true, 'pgcdc-test', 'a transactional message');
             select pg_logical_emit_message(false, 'pgcdc-test', 'not transactional');
             truncate toasty, ecommerce_sales restart identity",
    ]
    .join("\n")
    .split(";\n")
    {
        cluster.execute(statement).await;
    }
    // A transaction larger than logical_decoding_work_mem, streamed while in progress, with a
    // subtransaction rolled back inside it.
    cluster
        .execute(
            "begin;
             -- The harness's server commits asynchronously; the slot only decodes flushed WAL.
             set local synchronous_commit = on;
             insert into ecommerce_sales (invoice_no, stock_code, quantity, invoice_date, unit_price, country)
             select lpad(g::text, 6, '0'), 'S' || g, g, '2011-01-01', g / 100.0, 'Streamed'
             from generate_series(1, 3000) g;
             savepoint s;
             delete from ecommerce_sales where quantity < 100;
             rollback to savepoint s;
             update ecommerce_sales set country = 'Still streamed' where quantity % 7 = 0;
             commit;",
        )
        .await;

    let client = cluster.client(SHOP_DB).await;
    let rows = client
        .query(
            "select data from pg_logical_slot_peek_binary_changes('corpus', null, null, \
             'proto_version', '2', 'publication_names', 'corpus_pub', 'messages', 'true', \
             'streaming', 'on')",
            &[],
        )
        .await
        .expect("reading the slot");
    let dir = corpus_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the corpus dir");
    // Relation and Type messages seen so far, replayed at the head of every later file.
    let mut schema: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut written = 0;
    let mut skipped = 0;
    let mut in_stream = false;
    let mut tags = std::collections::BTreeMap::new();
    for row in &rows {
        let data: Vec<u8> = row.get(0);
        *tags.entry(data.first().map(|t| *t as char)).or_insert(0) += 1;
    }
    println!("{} messages from the slot: {tags:?}", rows.len());
    for row in rows {
        let data: Vec<u8> = row.get(0);
        // Megabyte values (the zoo's TOAST rows) make slow fuzz inputs that teach nothing new.
        if data.len() > MAX_MESSAGE {
            skipped += 1;
            continue;
        }
        match data.first() {
            Some(b'S') => in_stream = true,
            Some(b'E') => in_stream = false,
            _ => {}
        }
        match data.first() {
            // Inside a stream they carry an xid: replayed outside one they would not decode.
            Some(b'R' | b'Y') if !in_stream => schema.push(data.clone()),
            Some(b'B' | b'S') if current.is_empty() => {
                current.extend(schema.iter().cloned());
            }
            _ => {}
        }
        // A file ends with its transaction (Commit), streamed block (Stream Stop / Commit /
        // Abort), or is a non-transactional message on its own.
        let tag = data.first().copied();
        let lone_message = tag == Some(b'M') && current.is_empty();
        let ends = lone_message || matches!(tag, Some(b'C' | b'E' | b'c' | b'A'));
        current.push(data);
        let size: usize = current.iter().map(|m| m.len() + 4).sum();
        if ends || size >= MAX_FILE {
            let mut file = Vec::new();
            for message in current.drain(..) {
                file.extend_from_slice(&(message.len() as u32).to_be_bytes());
                file.extend_from_slice(&message);
            }
            written += 1;
            std::fs::write(dir.join(format!("{written:04}")), file).expect("writing a corpus file");
        }
    }
    println!(
        "wrote {written} corpus files to {} ({skipped} messages over {MAX_MESSAGE} bytes left out)",
        dir.display()
    );
    assert!(written >= 20);
}

fn psql(cluster: &PgCluster, args: &[&str], file: &Path) {
    let status = Command::new(cluster.bindir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(cluster.socket_dir())
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            SUPERUSER,
            "-d",
            SHOP_DB,
        ])
        .args(args)
        .arg(file)
        .status()
        .expect("running psql");
    assert!(status.success(), "psql {} failed", file.display());
}
