//! Exactly-once file tailing: lines appended to a file the agent tails arrive at the
//! collector once each, while the agent is killed with SIGKILL at random moments and the
//! collector is down for a while.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Agent, Collector, TestRng, wait_for};

const EVENTS: u64 = 100_000;

#[test]
fn agent_tails_a_file_exactly_once_across_kill9_and_collector_outage() {
    let mut rng = TestRng::from_env_or_clock();
    let logs = tempfile::tempdir().expect("temp dir");
    let path = logs.path().join("app.log");
    std::fs::write(&path, b"").expect("create the log file");
    let mut collector = Collector::start();
    let pattern = logs.path().join("*.log");
    let mut agent = Agent::start(
        &collector,
        &["--file", pattern.to_str().expect("utf-8 path")],
    );

    // Whole lines per write(2), 250 lines per write, about 16 s in all.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let path = path.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open for append");
            for chunk in 0..EVENTS / 250 {
                let text: String = (chunk * 250..(chunk + 1) * 250)
                    .map(|n| format!("level=info n={n} grp=g{} msg=\"event {n}\"\n", n % 5))
                    .collect();
                f.write_all(text.as_bytes()).expect("append lines");
                std::thread::sleep(Duration::from_millis(40));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut kills = 0;
    while kills < 12 || !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
        agent.kill9();
        kills += 1;
        match kills {
            3 => collector.kill9(),
            7 => collector.restart(),
            _ => {}
        }
        agent.restart();
    }
    writer.join().expect("writer thread");
    assert!(kills >= 10);

    wait_for(
        "every event at the collector",
        Duration::from_secs(60),
        || {
            let total = collector.count("");
            assert!(
                total <= EVENTS,
                "{total} events arrived for {EVENTS} written: duplicates\n{}",
                agent.log()
            );
            (total == EVENTS).then_some(())
        },
    );
    // Nothing more is on its way: the buffer is empty, and still exactly once.
    wait_for(
        "the agent's buffer to drain",
        Duration::from_secs(30),
        || (agent.metric("spoor_agent_buffer_unacked_records") == Some(0.0)).then_some(()),
    );
    assert_eq!(collector.count(""), EVENTS, "{}", agent.log());
    for decile in 0..10 {
        let (lo, hi) = (decile * EVENTS / 10, (decile + 1) * EVENTS / 10 - 1);
        assert_eq!(
            collector.count(&format!("n:[{lo} TO {hi}]")),
            EVENTS / 10,
            "n in {lo}..={hi}"
        );
    }
    // Order within one source: the file's lines were given seqs in the order they were
    // written, even with several batches in flight, retries and restarts.
    let mut by_seq: Vec<(u64, u64)> = Vec::new();
    for decile in 0..10 {
        let (lo, hi) = (decile * EVENTS / 10, (decile + 1) * EVENTS / 10 - 1);
        let q = format!("n:[{lo} TO {hi}]");
        let (status, body) = collector.get("/api/v1/search", &[("q", &q), ("limit", "10000")]);
        assert_eq!(status, 200, "{body}");
        for hit in body["hits"].as_array().expect("hits") {
            let field = |k: &str| -> u64 {
                match &hit[k] {
                    serde_json::Value::Number(n) => n.as_u64().expect("a whole number"),
                    v => v.as_str().and_then(|s| s.parse().ok()).expect("a number"),
                }
            };
            by_seq.push((field("seq"), field("n")));
        }
    }
    by_seq.sort_unstable();
    assert_eq!(by_seq.len() as u64, EVENTS);
    let out_of_order = by_seq.windows(2).find(|w| w[1].1 < w[0].1);
    assert!(
        out_of_order.is_none(),
        "lines of one file reached the collector out of order: (seq, n) {out_of_order:?}"
    );
    let (status, body) = collector.get("/api/v1/search", &[("q", "n:[* TO *] | count by grp")]);
    assert_eq!(status, 200, "{body}");
    let mut rows: Vec<(String, u64)> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().expect("group").to_string(),
                r[1].as_u64().expect("count"),
            )
        })
        .collect();
    rows.sort();
    let expected: Vec<(String, u64)> = (0..5).map(|g| (format!("g{g}"), EVENTS / 5)).collect();
    assert_eq!(rows, expected);
}
