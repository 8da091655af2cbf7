//! Indexing throughput and query latency: `cargo bench -p spoor-collector --bench index`.
//!
//! Events are built from the lines of `../shared/corpus/loghub/*.log` (timestamp, level,
//! task keys, a number field, the line as `msg`), `SPOOR_BENCH_EVENTS` of them (default
//! 1,000,000). Indexing: spoor's path (parse the stored logfmt line, build the document,
//! add, commit) beside a bare tantivy writer adding the same documents built in advance,
//! both single-threaded, in the same run. Queries: p50/p99 of a term, a phrase, a field
//! filter and a `count by` through `spoor_collector::search`, beside `rg -c` over the same
//! raw text (ripgrep must be installed).

use std::process::Command;
use std::time::{Duration, Instant};

use spoor_collector::audit::AuditRecord;
use spoor_collector::index::{LogIndex, build_document};
use spoor_collector::search::{SearchRequest, search};
use spoor_sdk::event::Event;
use tantivy::{IndexWriter, TantivyDocument};

#[path = "support/corpus.rs"]
mod corpus;
use corpus::corpus_lines;

fn events(n: usize) -> Vec<Vec<u8>> {
    let lines = corpus_lines();
    let levels = ["info", "info", "info", "warn", "error", "debug"];
    let tasks = [
        "charge",
        "parse_email",
        "send_receipt",
        "resize_image",
        "sync_crm",
    ];
    (0..n)
        .map(|i| {
            let mut e = Event::new();
            e.push(
                "ts",
                format!(
                    "2026-11-30T{:02}:{:02}:{:02}.{:09}Z",
                    (i / 3600) % 24,
                    (i / 60) % 60,
                    i % 60,
                    i % 1_000_000_000
                ),
            );
            e.push("level", levels[i % levels.len()]);
            e.push("msg", lines[i % lines.len()].clone());
            e.push("task", tasks[i % tasks.len()]);
            e.push("task_id", format!("01JD{i:020}"));
            e.push("host", format!("ip-10-0-0-{}", i % 16));
            e.push("latency_ms", (i * 37 % 900).to_string());
            e.to_line().into_bytes()
        })
        .collect()
}

fn record(seq: u64, line: &[u8]) -> AuditRecord {
    AuditRecord {
        seq,
        ingest_ts_nanos: 1_796_000_000_000_000_000 + seq as i64,
        agent: "bench".into(),
        batch_key: String::new(),
        line: line.to_vec(),
        batch_end: true,
        hash: [0; 32],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    (percentile(&t, 0.5), percentile(&t, 0.99))
}

fn main() {
    let n: usize = std::env::var("SPOOR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let lines = events(n);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mb = bytes as f64 / 1e6;
    println!("index: {n} events, {mb:.1} MB of logfmt");
    let memory = 256 << 20;

    // Bare tantivy: the same documents, built before the clock runs (in chunks, so ten
    // million of them need not sit in memory at once).
    let bare_dir = tempfile::tempdir().expect("temp dir");
    let bare = LogIndex::open(bare_dir.path()).expect("index");
    let mut writer: IndexWriter = bare
        .index
        .writer_with_num_threads(1, memory)
        .expect("writer");
    let mut bare_time = std::time::Duration::ZERO;
    for (c, chunk) in lines.chunks(200_000).enumerate() {
        let docs: Vec<TantivyDocument> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| build_document(&bare.schema, &record((c * 200_000 + i) as u64, l)))
            .collect();
        let started = Instant::now();
        for d in docs {
            writer.add_document(d).expect("add");
        }
        bare_time += started.elapsed();
        if c % 5 == 4 {
            eprintln!("  bare tantivy: {} documents", (c + 1) * 200_000);
        }
    }
    let started = Instant::now();
    writer.commit().expect("commit");
    bare_time += started.elapsed();
    drop(writer);

    // spoor: parse each stored line and build its document, as the indexer does.
    let dir = tempfile::tempdir().expect("temp dir");
    let index = LogIndex::open(dir.path()).expect("index");
    let started = Instant::now();
    let mut writer: IndexWriter = index
        .index
        .writer_with_num_threads(1, memory)
        .expect("writer");
    for (i, l) in lines.iter().enumerate() {
        writer
            .add_document(build_document(&index.schema, &record(i as u64, l)))
            .expect("add");
        if i % 1_000_000 == 0 && i > 0 {
            eprintln!("  spoor: {i} documents");
        }
    }
    writer.commit().expect("commit");
    let ours_time = started.elapsed();
    drop(writer);
    index.reader.reload().expect("reload");

    let ours = mb / ours_time.as_secs_f64();
    let base = mb / bare_time.as_secs_f64();
    println!("  spoor indexing (parse + build + add), 1 thread: {ours:7.1} MB/s");
    println!("  bare tantivy (documents prebuilt), 1 thread:    {base:7.1} MB/s");
    println!("  ratio: {:.2} of bare tantivy", ours / base);

    let raw = dir.path().join("raw.log");
    std::fs::write(&raw, lines.join(&b'\n')).expect("raw text");
    let queries = [
        ("term", "failed", vec!["-c", "-i", "-w", "failed"]),
        (
            "phrase",
            "\"Failed password\"",
            vec!["-c", "-i", "Failed password"],
        ),
        ("field", "level:error", vec!["-c", "level=error"]),
        (
            "count by",
            "level:error | count by task",
            vec!["-o", "-c", "level=error"],
        ),
    ];
    println!("  query latency over {n} events (p50 / p99 of 30 runs; rg p50 of 5):");
    for (name, q, rg_args) in queries {
        let req = SearchRequest {
            q: q.to_string(),
            limit: Some(100),
            ..Default::default()
        };
        let total = search(&index, &req).expect("search").total;
        let (p50, p99) = time_runs(30, || {
            search(&index, &req).expect("search");
        });
        let (rg50, _) = time_runs(5, || {
            Command::new("rg")
                .args(&rg_args)
                .arg(&raw)
                .output()
                .expect("ripgrep (apt-get install ripgrep)");
        });
        println!(
            "    {name:9} {q:30} total {total:8}  spoor {:8.2} ms / {:8.2} ms   rg {:8.2} ms   ({:.0}x faster)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            rg50.as_secs_f64() * 1e3,
            rg50.as_secs_f64() / p50.as_secs_f64()
        );
    }
}
