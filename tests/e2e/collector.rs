//! Durable ingest: answers after fsync, gapless seqs, duplicates, bad bodies, kill -9, and
//! the audit log verified and tamper-checked through the CLI.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Collector, read_tree, run_cli};

fn segment_bytes(c: &Collector) -> Vec<u8> {
    read_tree(&c.data_dir().join("audit/segments"))
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn ingest_is_durable_gapless_and_idempotent() {
    let c = Collector::start();
    let (status, first) = c.ingest(
        b"level=info msg=\"one\" marker=m-001\nplain text two\n",
        Some("b-1"),
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["duplicate"], false);
    // The answer comes after the append and fsync: the bytes are in a segment file now.
    assert!(contains(&segment_bytes(&c), "marker=m-001"));

    let (_, second) = c.ingest(b"a=3\na=4\na=5\n", Some("b-2"));
    assert_eq!(
        second["first_seq"], first["next_seq"],
        "seqs are gapless across batches"
    );
    assert_eq!(
        second["next_seq"].as_u64(),
        second["first_seq"].as_u64().map(|s| s + 3)
    );

    let (status, again) = c.ingest(
        b"level=info msg=\"one\" marker=m-001\nplain text two\n",
        Some("b-1"),
    );
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["first_seq"], first["first_seq"]);
    c.wait_indexed(5);
    assert_eq!(
        c.count("marker:m-001"),
        1,
        "a duplicate batch is not appended again"
    );
}

#[test]
fn bad_bodies_get_clear_errors_and_bad_lines_are_kept() {
    let c = Collector::start();
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/ingest", c.url()))
        .header("Content-Encoding", "zstd")
        .body(b"definitely not zstd".to_vec())
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().expect("json error");
    assert!(
        body["error"].as_str().unwrap_or("").contains("zstd"),
        "{body}"
    );

    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/ingest", c.url()))
        .header("Content-Encoding", "br")
        .body(b"a=1".to_vec())
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 415);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(
        b"level=warn msg=caf\xe9 id=bad-utf8\nk=\"unterminated id=bad-parse\nlevel=info id=fine\n",
    )
    .expect("gzip");
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/ingest", c.url()))
        .header("Content-Encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    c.wait_indexed(3);
    assert_eq!(c.count("invalid_utf8:true id:bad-utf8"), 1);
    assert_eq!(c.count("parse_error:true"), 1);
    assert_eq!(c.count("id:fine"), 1);
}

/// Posts numbered batches until told to stop; records which keys were acknowledged.
fn post_until(
    url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, u64>>>,
    round: usize,
) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("r{round}-b{n}");
        let lines: String = (0..20)
            .map(|i| format!("level=info batch={key} i={i}\n"))
            .collect();
        let resp = http
            .post(format!("{url}/api/v1/ingest"))
            .header("Idempotency-Key", &key)
            .body(lines)
            .send();
        if let Ok(r) = resp
            && r.status().is_success()
        {
            acked.lock().expect("lock").insert(key, 20);
        }
    }
}

#[test]
fn acknowledged_batches_survive_kill9_exactly_once() {
    let mut c = Collector::start();
    let acked = Arc::new(Mutex::new(HashMap::new()));
    for round in 0..10 {
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..2)
            .map(|p| {
                let (url, stop, acked) = (c.url(), stop.clone(), acked.clone());
                std::thread::spawn(move || post_until(url, stop, acked, round * 10 + p))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 37 * round as u64));
        c.kill9();
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            p.join().expect("poster thread");
        }
        let (code, out, err) = run_cli(
            &[
                "audit",
                "verify",
                "--data-dir",
                &c.data_dir().to_string_lossy(),
            ],
            &[],
        );
        assert_eq!(code, 0, "audit verify after kill {round}:\n{out}\n{err}");
        c.restart();
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 10,
        "the test posted too little to mean anything: {}",
        acked.len()
    );
    c.wait_caught_up();
    let (_, rows) = c.get(
        "/api/v1/search",
        &[("q", "| count by batch"), ("limit", "0")],
    );
    let found: HashMap<String, u64> = rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or("").to_string(),
                r[1].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let total = c.count("");
    for (key, lines) in &acked {
        assert_eq!(
            found.get(key),
            Some(lines),
            "acknowledged batch {key} must be there exactly once"
        );
    }
    for (key, n) in &found {
        assert_eq!(*n, 20, "batch {key} is half-present");
    }
    assert_eq!(total, found.values().sum::<u64>());
}

#[test]
fn audit_verify_names_tampering() {
    let mut c = Collector::start();
    for b in 0..5 {
        let lines: String = (0..50)
            .map(|i| format!("level=info b={b} i={i} msg=\"record number {i}\"\n"))
            .collect();
        assert_eq!(c.ingest(lines.as_bytes(), Some(&format!("t{b}"))).0, 200);
    }
    c.stop();
    let dir = c.data_dir();
    let (code, out, _) = run_cli(
        &["audit", "verify", "--data-dir", &dir.to_string_lossy()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");

    let (path, mut bytes) = read_tree(&dir.join("audit/segments"))
        .into_iter()
        .next()
        .expect("a segment");
    let at = bytes
        .windows(b"record number 7\"".len())
        .position(|w| w == b"record number 7\"")
        .expect("record text");
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).expect("tamper");
    let (code, out, _) = run_cli(
        &["audit", "verify", "--data-dir", &dir.to_string_lossy()],
        &[],
    );
    assert_eq!(code, 1, "tampering must exit 1:\n{out}");
    assert!(out.contains("INVALID"), "{out}");
    assert!(
        out.to_lowercase().contains("seq 7"),
        "the bad record is named:\n{out}"
    );
}
