//! Ingest throughput: `cargo bench -p spoor-collector --bench ingest`.
//!
//! Starts a real collector in this process (HTTP on loopback, parsing, hash chain, group
//! commit with fsync, and the indexer following along), posts the lines of
//! `../shared/corpus/loghub/*.log` in batches of 1,000 from 4 concurrent clients, and waits
//! for every acknowledgement. Then, as the baseline, writes the same batches to one plain
//! file with an fsync after each. Prints MB/s, events/s and the ratio.
//! `SPOOR_BENCH_MB` sets the volume (default 64).

use std::io::Write;
use std::time::Instant;

#[path = "support/corpus.rs"]
mod corpus;
use corpus::corpus_lines;

fn main() {
    let target_mb: usize = std::env::var("SPOOR_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // reqwest uses rustls without a default provider; the project uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lines = corpus_lines();
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let mut total_bytes = 0usize;
    let mut total_lines = 0usize;
    let mut i = 0usize;
    while total_bytes < target_mb << 20 {
        let mut body = Vec::new();
        for _ in 0..1000 {
            body.extend_from_slice(lines[i % lines.len()].as_bytes());
            body.push(b'\n');
            i += 1;
        }
        total_bytes += body.len();
        total_lines += 1000;
        batches.push(body);
    }
    println!(
        "ingest: {} batches, {total_lines} lines, {:.1} MB",
        batches.len(),
        total_bytes as f64 / 1e6
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (elapsed, acked) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = spoor_collector::CollectorConfig {
            data_dir: dir.path().join("collector"),
            listen: addr,
            ..Default::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(spoor_collector::server::run(config, listener, async move {
            let _ = stop_rx.await;
        }));
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/api/v1/ingest");
        let queue = std::sync::Arc::new(tokio::sync::Mutex::new(
            batches.clone().into_iter().enumerate(),
        ));
        let started = Instant::now();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
                tokio::spawn(async move {
                    let mut acked = 0usize;
                    loop {
                        let next = queue.lock().await.next();
                        let Some((n, body)) = next else { break };
                        let resp = client
                            .post(&url)
                            .header("Idempotency-Key", format!("bench-{n}"))
                            .body(body)
                            .send()
                            .await
                            .expect("post");
                        assert!(
                            resp.status().is_success(),
                            "ingest answered {}",
                            resp.status()
                        );
                        acked += 1;
                        if n % 50 == 0 {
                            eprintln!("  ingest: {n} batches posted");
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked = 0;
        for w in workers {
            acked += w.await.expect("worker");
        }
        let elapsed = started.elapsed();
        // Freshness: time from the acknowledgement of one line to its first search hit, once
        // the indexer has caught up with the burst above.
        let caught_up = Instant::now();
        loop {
            let text = client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let gauge = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            };
            if gauge("spoor_audit_next_seq ").is_some()
                && gauge("spoor_audit_next_seq ") == gauge("spoor_index_next_seq ")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        println!(
            "  indexer caught up {:.1} s after the last acknowledgement",
            caught_up.elapsed().as_secs_f64()
        );
        let mut fresh = Vec::new();
        for n in 0..50 {
            let marker = format!("fresh-{n}");
            let resp = client
                .post(&url)
                .body(format!(
                    "level=info marker={marker} msg=\"freshness probe\"\n"
                ))
                .send()
                .await
                .expect("post");
            assert!(resp.status().is_success());
            let acked = Instant::now();
            loop {
                let body: serde_json::Value = client
                    .get(format!("http://{addr}/api/v1/search"))
                    .query(&[("q", format!("marker:{marker}")), ("limit", "0".into())])
                    .send()
                    .await
                    .expect("search")
                    .json()
                    .await
                    .expect("json");
                if body["total"] == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            fresh.push(acked.elapsed());
        }
        fresh.sort();
        println!(
            "  freshness (ack to first hit, 50 probes): p50 {:.0} ms, p99 {:.0} ms",
            fresh[25].as_secs_f64() * 1e3,
            fresh[49].as_secs_f64() * 1e3
        );
        let _ = stop_tx.send(());
        server.await.expect("server task").expect("collector ran");
        (elapsed, acked)
    });
    assert_eq!(acked, batches.len());

    let path = dir.path().join("baseline.log");
    let mut file = std::fs::File::create(&path).expect("baseline file");
    let started = Instant::now();
    for b in &batches {
        file.write_all(b).expect("write");
        file.sync_data().expect("fsync");
    }
    let baseline = started.elapsed();

    let mb = total_bytes as f64 / 1e6;
    let ours = mb / elapsed.as_secs_f64();
    let base = mb / baseline.as_secs_f64();
    println!(
        "  spoor collector (HTTP, parse, hash chain, fsync): {ours:8.1} MB/s  {:10.0} events/s",
        total_lines as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  plain append + fsync per batch (baseline):        {base:8.1} MB/s  {:10.0} events/s",
        total_lines as f64 / baseline.as_secs_f64()
    );
    println!("  ratio: {:.2}x the baseline", ours / base);
}
