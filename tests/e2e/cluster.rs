//! Cluster mode (issue 13): real `nats-server` processes in a JetStream cluster, real
//! collectors in `[cluster]` mode, real agents. Ingest through any collector, search from
//! any collector, a collector killed, a stream leader killed; every shard copy's audit
//! chain verified across ownership epochs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Agent, Collector, NatsCluster, run_cli, wait_for};

const SHARDS: u32 = 6;

/// Starts `n` collectors in cluster mode on `nats`.
fn collectors(nats: &NatsCluster, n: usize, replicas: usize) -> Vec<Collector> {
    collectors_with(nats, n, replicas, "")
}

/// Starts `n` collectors in cluster mode on `nats`, with `extra` config prepended.
fn collectors_with(nats: &NatsCluster, n: usize, replicas: usize, extra: &str) -> Vec<Collector> {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    (0..n)
        .map(|i| {
            Collector::start_with_port_config(|port| {
                format!(
                    "{extra}\n[index]\ncommit_interval = \"200ms\"\n\n[cluster]\nnats = [{}]\nshards = {SHARDS}\n\
                     node_id = \"c{}\"\nadvertise_url = \"http://127.0.0.1:{port}\"\n\
                     lease_ttl = \"3s\"\nreplicas = {replicas}\n",
                    urls.join(", "),
                    i + 1
                )
            })
        })
        .collect()
}

/// The cluster view of one collector.
fn view(c: &Collector) -> Value {
    let (status, body) = c.get("/api/v1/cluster", &[]);
    assert_eq!(status, 200, "{body}");
    body
}

/// Owner of each shard as `c` sees it.
fn owners(c: &Collector) -> Vec<Option<String>> {
    view(c)["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["owner"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every shard has an owner among `alive` (node ids) and each of them owns
/// at least one.
fn wait_spread(c: &Collector, alive: &[&str]) {
    wait_for(
        "every shard owned, by every live collector",
        Duration::from_secs(60),
        || {
            let o = owners(c);
            let all = o
                .iter()
                .all(|x| x.as_deref().is_some_and(|x| alive.contains(&x)));
            let each = alive
                .iter()
                .all(|a| o.iter().any(|x| x.as_deref() == Some(a)));
            (all && each).then_some(())
        },
    );
    // Placement settles once every collector has seen the others for a lease_ttl.
    let mut last = owners(c);
    let mut since = Instant::now();
    wait_for("shard placement to settle", Duration::from_secs(60), || {
        let now = owners(c);
        if now != last {
            last = now;
            since = Instant::now();
        }
        (since.elapsed() > Duration::from_secs(5)).then_some(())
    });
}

/// Posts `batches` batches of `per` lines under agent name `agent`, spread over
/// `targets`, each with an idempotency key; returns the lines sent.
fn post_batches(targets: &[&Collector], agent: &str, run: &str, batches: usize, per: usize) -> u64 {
    let http = reqwest::blocking::Client::new();
    for b in 0..batches {
        let body: String = (0..per)
            .map(|i| {
                format!("level=info run={run} src={agent} batch={b} i={i} msg=\"event {b}/{i}\"\n")
            })
            .collect();
        let target = targets[b % targets.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = http
                .post(format!("{}/api/v1/ingest", target.url()))
                .header("X-Spoor-Agent", agent)
                .header("Idempotency-Key", format!("{run}-{agent}-{b}"))
                .body(body.clone())
                .send();
            match resp {
                Ok(r) if r.status().is_success() => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "batch {b} of {agent} not accepted: {other:?}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    (batches * per) as u64
}

fn search(c: &Collector, params: &[(&str, &str)]) -> Value {
    let (status, body) = c.get("/api/v1/search", params);
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `q` counts `n` on `c` with every shard answering.
fn wait_count(c: &Collector, q: &str, n: u64, within: Duration) {
    let mut last = Value::Null;
    let start = Instant::now();
    while start.elapsed() < within {
        last = search(c, &[("q", q), ("limit", "0")]);
        if last["total"] == n && last["missing_shards"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{q:?} never counted {n} on {}: last answer {last}", c.url());
}

/// Stops the collectors cleanly and verifies every shard copy across all data dirs.
fn verify_all(collectors: &mut [Collector]) -> String {
    let mut args = vec!["audit".to_string(), "verify".to_string()];
    for c in collectors.iter_mut() {
        c.stop();
        args.push("--data-dir".into());
        args.push(c.data_dir().display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&args, &[]);
    assert_eq!(code, 0, "audit verify failed:\n{out}\n{err}");
    out
}

#[test]
fn cluster_100k_events_are_searchable_once_from_every_collector() {
    let nats = NatsCluster::start(3);
    let mut cs = collectors(&nats, 3, 1);
    wait_spread(&cs[0], &["c1", "c2", "c3"]);

    // Two real agents, each speaking HTTP to a different collector: 20,000 lines each.
    let agents = [Agent::start(&cs[0], &[]), Agent::start(&cs[1], &[])];
    for (n, agent) in agents.iter().enumerate() {
        for chunk in 0..4 {
            let lines: String = (0..5_000)
                .map(|i| {
                    format!(
                        "level=info run=big src=agent{n} chunk={chunk} i={i} msg=\"agent line\"\n"
                    )
                })
                .collect();
            agent.send_tcp(lines.as_bytes());
        }
    }
    // 60,000 more straight over HTTP, from 12 agent names so that every shard gets some.
    let targets: Vec<&Collector> = cs.iter().collect();
    let mut sent = 40_000;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|t| {
                let targets = &targets;
                s.spawn(move || {
                    (0..4)
                        .map(|a| post_batches(targets, &format!("app-{t}-{a}"), "big", 10, 500))
                        .sum::<u64>()
                })
            })
            .collect();
        for h in handles {
            sent += h.join().expect("poster");
        }
    });
    assert_eq!(sent, 100_000);
    // A retried batch is answered as a duplicate and not stored again.
    let (status, dup) = {
        let body: String = (0..500)
            .map(|i| format!("level=info run=big src=app-0-0 batch=0 i={i} msg=\"event 0/{i}\"\n"))
            .collect();
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/ingest", cs[2].url()))
            .header("X-Spoor-Agent", "app-0-0")
            .header("Idempotency-Key", "big-app-0-0-0")
            .body(body)
            .send()
            .expect("ingest");
        (r.status().as_u16(), r.json::<Value>().expect("json"))
    };
    assert_eq!(
        (status, &dup["duplicate"]),
        (200, &Value::Bool(true)),
        "{dup}"
    );

    wait_count(&cs[0], "run:big", 100_000, Duration::from_secs(120));
    for c in &cs {
        let body = search(c, &[("q", "run:big"), ("limit", "0")]);
        assert_eq!(body["total"], 100_000, "from {}: {body}", c.url());
        assert_eq!(body["shards"]["answered"], SHARDS, "{body}");
    }
    assert_eq!(cs[2].count("run:big src:agent0"), 20_000);
    assert_eq!(cs[2].count("run:big src:agent1"), 20_000);
    assert_eq!(cs[1].count("run:big src:app-2-3"), 5_000);

    // Paging with the cursor visits every hit of a query exactly once, in order.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut last_key: Option<(String, u64, u64)> = None;
    loop {
        let mut params = vec![("q", "run:big batch:7 i:<40"), ("limit", "70")];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let page = search(&cs[1], &params);
        for hit in page["hits"].as_array().expect("hits") {
            let id = format!("{}/{}", hit["src"], hit["i"]);
            assert!(seen.insert(id.clone()), "{id} twice");
            let key = (
                hit["ts"].as_str().unwrap_or_default().to_string(),
                hit["shard"].as_u64().expect("shard"),
                hit["seq"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("seq"),
            );
            if let Some(prev) = &last_key {
                assert!(key.0 <= prev.0, "not newest first: {key:?} after {prev:?}");
            }
            last_key = Some(key);
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    // batch=7 exists for the 12 HTTP agents (i < 40 of 500 lines each).
    assert_eq!(seen.len(), 12 * 40);

    drop(agents);
    let out = verify_all(&mut cs);
    assert!(!out.contains("PROBLEM"), "{out}");
    for shard in 0..SHARDS {
        assert!(
            out.contains(&format!("shard {shard} copy of c")),
            "shard {shard} missing:\n{out}"
        );
    }
}

#[test]
fn cluster_collector_killed_mid_stream_hands_its_shards_over() {
    let nats = NatsCluster::start(3);
    let mut cs = collectors(&nats, 3, 1);
    wait_spread(&cs[0], &["c1", "c2", "c3"]);
    let victim_shards: Vec<usize> = owners(&cs[0])
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_deref() == Some("c3"))
        .map(|(k, _)| k)
        .collect();
    assert!(!victim_shards.is_empty());

    let targets: Vec<&Collector> = vec![&cs[0], &cs[1]];
    let mut sent = 0;
    for a in 0..12 {
        sent += post_batches(&targets, &format!("pre-{a}"), "kill", 4, 250);
    }
    wait_count(&cs[0], "run:kill", sent, Duration::from_secs(60));

    cs[2].kill9();
    // While c3's leases have not lapsed, a search reports its shards and answers the rest.
    let partial = search(&cs[0], &[("q", "run:kill"), ("limit", "5")]);
    let missing: Vec<u64> = partial["missing_shards"]
        .as_array()
        .expect("missing_shards")
        .iter()
        .map(|m| m["shard"].as_u64().expect("shard"))
        .collect();
    assert_eq!(
        missing,
        victim_shards.iter().map(|&k| k as u64).collect::<Vec<_>>(),
        "{partial}"
    );
    assert!(
        partial["total"].as_u64().expect("total") < sent,
        "{partial}"
    );
    assert_eq!(partial["hits"].as_array().expect("hits").len(), 5);

    // Ingest goes on meanwhile; the survivors take c3's shards after the lease lapses.
    let targets: Vec<&Collector> = vec![&cs[0], &cs[1]];
    for a in 0..12 {
        sent += post_batches(&targets, &format!("pre-{a}"), "kill2", 4, 250);
    }
    wait_spread(&cs[0], &["c1", "c2"]);
    wait_count(
        &cs[0],
        "run:kill OR run:kill2",
        sent,
        Duration::from_secs(60),
    );
    assert_eq!(cs[1].count("run:kill OR run:kill2"), sent);

    // c3 comes back: its shards are handed back to it, and its copies catch up from its
    // own consumers (what it already had is not appended again).
    cs[2].restart_with_config();
    wait_spread(&cs[0], &["c1", "c2", "c3"]);
    assert_eq!(
        owners(&cs[0])
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_deref() == Some("c3"))
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        victim_shards
    );
    wait_count(
        &cs[2],
        "run:kill OR run:kill2",
        sent,
        Duration::from_secs(60),
    );

    let out = verify_all(&mut cs);
    assert!(!out.contains("PROBLEM"), "{out}");
    // A shard c3 owned shows a new epoch in its new owner's copy and, after the
    // restart, in c3's own: the links to the previous owners' heads were checked.
    assert!(
        !out.contains("0 epoch link(s) checked"),
        "no epoch link was checked:\n{out}"
    );
    let c3_epochs = out
        .lines()
        .filter(|l| l.contains("copy of c3") && l.matches(" by c").count() >= 2)
        .count();
    assert_eq!(c3_epochs, victim_shards.len(), "{out}");
}

#[test]
fn cluster_stream_leader_killed_publishes_retry() {
    let mut nats = NatsCluster::start(3);
    let cs = collectors(&nats, 2, 3);
    wait_spread(&cs[0], &["c1", "c2"]);
    let agent = "leader-test";
    let shard = spoor_collector::cluster::shard_for(agent, SHARDS);
    let stream = format!("spoor-shard-{shard}");
    let targets: Vec<&Collector> = cs.iter().collect();
    let mut sent = post_batches(&targets, agent, "leader", 10, 200);
    let leader = wait_for("the stream's leader", Duration::from_secs(10), || {
        nats.stream_leader(&stream)
    });
    let posted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let poster = s.spawn(|| {
            // 300 batches, paced, so that the kill lands in the middle of them.
            (0..300)
                .map(|b| {
                    let n = post_batches(&targets, agent, &format!("leader2 b2={b}"), 1, 100);
                    posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                    n
                })
                .sum::<u64>()
        });
        wait_for("the second run under way", Duration::from_secs(60), || {
            (posted.load(std::sync::atomic::Ordering::Relaxed) >= 50).then_some(())
        });
        nats.kill9(&leader);
        assert!(
            !poster.is_finished(),
            "the publishes ended before the leader was killed"
        );
        let new_leader = wait_for("a new stream leader", Duration::from_secs(30), || {
            nats.stream_leader(&stream).filter(|l| *l != leader)
        });
        assert_ne!(new_leader, leader);
        sent += poster.join().expect("poster");
    });
    wait_count(
        &cs[0],
        "run:leader OR run:leader2",
        sent,
        Duration::from_secs(60),
    );
    // The other collector gives the same count (its fan-out may still be catching up
    // with the shards' new owners for a moment after the failover).
    wait_count(
        &cs[1],
        "run:leader OR run:leader2",
        sent,
        Duration::from_secs(30),
    );
}

#[test]
fn cluster_tail_streams_new_lines_from_every_shard() {
    use std::io::{BufRead, BufReader};

    let nats = NatsCluster::start(1);
    let cs = collectors(&nats, 2, 1);
    wait_spread(&cs[0], &["c1", "c2"]);
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client")
        .get(format!("{}/api/v1/tail", cs[0].url()))
        .query(&[("q", "marker:ctail")])
        .send()
        .expect("tail");
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(hit) = serde_json::from_str(data.trim())
                && tx.send(hit).is_err()
            {
                break;
            }
        }
    });
    // Lines from several agent names (so several shards), posted to the other collector,
    // until hits from at least three shards arrived.
    let mut shards = HashSet::new();
    let mut n = 0;
    wait_for(
        "tailed lines from three shards",
        Duration::from_secs(30),
        || {
            n += 1;
            let agent = format!("tail-{n}");
            let body = format!(
                "level=info marker=ctail src={agent} msg=\"live {n}\"\nlevel=info marker=other\n"
            );
            let r = reqwest::blocking::Client::new()
                .post(format!("{}/api/v1/ingest", cs[1].url()))
                .header("X-Spoor-Agent", &agent)
                .body(body)
                .send()
                .expect("ingest");
            assert!(r.status().is_success());
            while let Ok(hit) = rx.recv_timeout(Duration::from_millis(300)) {
                assert_eq!(hit["marker"], "ctail", "{hit}");
                shards.insert(hit["shard"].as_u64().expect("each hit names its shard"));
            }
            (shards.len() >= 3).then_some(())
        },
    );
}

#[test]
fn cluster_alert_rules_notify_once_per_cluster() {
    let rx = crate::alerts::Receiver::start(0);
    let config = format!(
        "[alerts]\ninterval = \"200ms\"\n\n[[alerts.notifier]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[alerts.rule]]\nname = \"charge-errors\"\nkind = \"threshold\"\nquery = \"level:error task:charge\"\n\
         window = \"10s\"\nop = \">\"\nvalue = 4\nnotify = [\"hook\"]\n",
        rx.url("hook")
    );
    let nats = NatsCluster::start(1);
    let cs = collectors_with(&nats, 2, 1, &config);
    wait_spread(&cs[0], &["c1", "c2"]);
    // Errors from three agents, so they land on several shards: only the sum breaches.
    for (n, agent) in ["pay-1", "pay-2", "pay-3"].iter().enumerate() {
        let body: String = (0..2)
            .map(|i| {
                format!(
                    "ts={} level=error task=charge msg=\"attempt {i} failed\"\n",
                    crate::alerts::now_ts()
                )
            })
            .collect();
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/ingest", cs[n % 2].url()))
            .header("X-Spoor-Agent", *agent)
            .body(body)
            .send()
            .expect("ingest");
        assert!(r.status().is_success());
    }
    let got = rx.wait_delivered("hook", 1);
    assert_eq!(got[0]["status"], "firing", "{}", got[0]);
    // Both collectors run the evaluator; only the owner of shard 0 evaluates.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.delivered("hook").len(), 1, "{:?}", rx.delivered("hook"));
}

/// Load for the benchmark: 6 threads post 1,000-line batches (24 agent names, so every
/// shard gets some) round-robin to `cs` for `secs`; returns the lines acknowledged and the
/// seconds it took.
fn bench_load(cs: &[Collector], run: &str, secs: u64) -> (u64, f64) {
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let sent = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                s.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let mut sent = 0u64;
                    let mut b = 0usize;
                    while Instant::now() < stop {
                        let body: String = (0..1000)
                            .map(|i| {
                                format!(
                                    "ts=2026-01-01T00:00:00Z level=info run={run} t={t} b={b} i={i} msg=\"GET /api/items/{i} 200 in 12ms\"\n"
                                )
                            })
                            .collect();
                        let r = http
                            .post(format!("{}/api/v1/ingest", cs[b % cs.len()].url()))
                            .header("X-Spoor-Agent", format!("bench-{t}-{}", b % 4))
                            .header("Idempotency-Key", format!("{run}-{t}-{b}"))
                            .body(body)
                            .send();
                        if r.is_ok_and(|r| r.status().is_success()) {
                            sent += 1000;
                        }
                        b += 1;
                    }
                    sent
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("loader")).sum()
    });
    (sent, start.elapsed().as_secs_f64())
}

/// Milliseconds from posting one line to one collector until another finds it (p50, max
/// of 15 samples on an otherwise idle setup).
fn bench_latency(cs: &[Collector], tag: &str) -> (f64, f64) {
    let n = cs.len();
    let mut lat = Vec::new();
    for k in 0..15 {
        let marker = format!("lat{tag}x{k}");
        let t0 = Instant::now();
        post_batches(&[&cs[k % n]], &format!("lat-{k}"), &marker, 1, 1);
        loop {
            let body = search(
                &cs[(k + 1) % n],
                &[("q", &format!("run:{marker}")), ("limit", "0")],
            );
            if body["total"] == 1 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{marker} never searchable"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    (lat[lat.len() / 2], lat[lat.len() - 1])
}

/// The cluster benchmark (not part of the suite; run it in release, see BENCHMARKS.md):
/// events/s acknowledged and searchable with one collector alone (no `[cluster]`) and
/// with 1, 2 and 3 collectors on NATS JetStream, and the latency from a posted line to
/// its being searchable through another collector.
#[test]
#[ignore = "benchmark: cargo test --release --test e2e cluster_benchmark -- --ignored --nocapture"]
fn cluster_benchmark() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let nodes = env("SPOOR_BENCH_NATS_NODES", 1) as usize;
    let secs = env("SPOOR_BENCH_SECS", 10);
    // (label, collectors, acked/s, searchable/s, p50 ms, max ms)
    let mut results: Vec<(String, usize, f64, f64, f64, f64)> = Vec::new();
    {
        let alone = [Collector::start_with_config(
            "[index]\ncommit_interval = \"200ms\"\n",
        )];
        let (sent, acked) = bench_load(&alone, "alone", secs);
        let start = Instant::now();
        wait_for(
            "the lone collector to index",
            Duration::from_secs(600),
            || (alone[0].count("run:alone") == sent).then_some(()),
        );
        let searchable = acked + start.elapsed().as_secs_f64();
        let (p50, max) = bench_latency(&alone, "alone");
        results.push((
            "alone (no [cluster])".into(),
            1,
            sent as f64 / acked,
            sent as f64 / searchable,
            p50,
            max,
        ));
    }
    for n in 1..=3usize {
        let nats = NatsCluster::start(nodes);
        let cs = collectors(&nats, n, nodes.min(3));
        let ids: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        wait_spread(&cs[0], &ids);
        let run = format!("bench{n}");
        let (sent, acked) = bench_load(&cs, &run, secs);
        let start = Instant::now();
        wait_count(
            &cs[0],
            &format!("run:{run}"),
            sent,
            Duration::from_secs(600),
        );
        let searchable = acked + start.elapsed().as_secs_f64();
        let (p50, max) = bench_latency(&cs, &run);
        results.push((
            format!("cluster, {n} collector(s)"),
            n,
            sent as f64 / acked,
            sent as f64 / searchable,
            p50,
            max,
        ));
    }
    println!(
        "NATS servers: {nodes}, stream replicas: {}, load: {secs} s",
        nodes.min(3)
    );
    println!(
        "| setup | events/s acknowledged | events/s searchable | vs 1 collector | per collector | latency to searchable p50 (max) |"
    );
    let base = results[1].3;
    for (label, n, ack, searchable, p50, max) in &results {
        println!(
            "| {label} | {ack:.0} | {searchable:.0} | {:.2} | {:.2} | {p50:.0} ms ({max:.0} ms) |",
            searchable / base,
            searchable / base / *n as f64
        );
    }
}

/// Posts `body` as agent `agent` to `c`, retrying until accepted.
fn post_as(c: &Collector, agent: &str, key: &str, body: &str) {
    let http = reqwest::blocking::Client::new();
    wait_for("the batch accepted", Duration::from_secs(30), || {
        http.post(format!("{}/api/v1/ingest", c.url()))
            .header("X-Spoor-Agent", agent)
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
}

#[test]
fn cluster_dead_letters_and_context_answer_from_a_collector_not_owning_the_shard() {
    let receiver = crate::dlq::Receiver::start(Duration::ZERO);
    let extra = format!(
        "[[dlq.target]]\ntask = \"*\"\nurl = \"{}\"\nmax_replays = 3\ntimeout = \"10s\"\n",
        receiver.url("/replay")
    );
    let nats = NatsCluster::start(1);
    let cs = collectors_with(&nats, 2, 1, &extra);
    wait_spread(&cs[0], &["c1", "c2"]);

    // A task's log line, then its dead-letter reports, all from one agent (one shard).
    let body = format!(
        "level=info task=cdlq task_id=crun-1 msg=\"working on it\"\n{}{}",
        crate::dlq::report("cdlq", "crun-1", "smtp down", ""),
        crate::dlq::report("cdlq", "crun-2", "smtp down", "")
    );
    post_as(&cs[0], "dlq-agent", "cdlq-1", &body);
    wait_count(&cs[0], "task:cdlq", 3, Duration::from_secs(30));
    let hit = search(&cs[0], &[("q", "task_id:crun-1 kind:deadletter")]);
    let hit = &hit["hits"][0];
    let shard = hit["shard"].as_u64().expect("shard");
    let seq = hit["seq"].as_str().expect("seq").to_string();
    let owner = owners(&cs[0])[shard as usize].clone().expect("owner");
    let other = if owner == "c1" { &cs[1] } else { &cs[0] };

    // Listed from the collector that does not own the shard, ids naming the shard.
    let entries = wait_for("dead letters listed", Duration::from_secs(20), || {
        let (status, body) = other.get("/api/v1/dlq", &[("task", "cdlq")]);
        assert_eq!(status, 200, "{body}");
        (body["total"] == 2 && body["missing_shards"] == serde_json::json!([])).then_some(body)
    });
    let first = &entries["entries"][0];
    assert_eq!(first["task_id"], "crun-1", "{entries}");
    assert_eq!(first["shard"], shard);
    let id = first["id"].as_str().expect("id").to_string();
    assert_eq!(id, format!("s{shard}-{seq}"));
    let id2 = entries["entries"][1]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Shown, dry-run, replayed and discarded through the shard's owner.
    let (status, shown) = other.get(&format!("/api/v1/dlq/{id}"), &[]);
    assert_eq!((status, &shown["task_id"]), (200, &Value::from("crun-1")));
    let (status, dry) = other.post(
        "/api/v1/dlq/replay",
        &serde_json::json!({ "ids": [id], "dry_run": true }),
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["send"][0]["entry"]["id"], id.as_str(), "{dry}");
    assert_eq!(dry["send"][0]["url"], receiver.url("/replay"));
    let (status, dry) = other.post(
        &format!("/api/v1/dlq/{id}/replay?dry_run=true"),
        &Value::Null,
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["send"][0]["entry"]["id"], id.as_str(), "{dry}");
    assert!(receiver.received().is_empty());
    let (status, replayed) = other.post(&format!("/api/v1/dlq/{id}/replay"), &Value::Null);
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["entry"]["state"], "replayed", "{replayed}");
    let keys: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys, ["crun-1"]);
    let job = replayed["job"]["id"].as_str().expect("job id");
    let (status, j) = other.get(&format!("/api/v1/dlq/jobs/{job}"), &[]);
    assert_eq!((status, &j["replayed"]), (200, &Value::from(1)), "{j}");
    let (status, d) = other.post(&format!("/api/v1/dlq/{id2}/discard"), &Value::Null);
    assert_eq!(
        (status, &d["state"]),
        (200, &Value::from("discarded")),
        "{d}"
    );
    let (_, listed) = other.get("/api/v1/dlq", &[("task", "cdlq"), ("state", "pending")]);
    assert_eq!(listed["total"], 0, "{listed}");
    // Ids of cluster mode only.
    assert_eq!(other.get("/api/v1/dlq/7", &[]).0, 400);

    // Context of the hit comes from its shard's owner.
    let (status, ctx) = other.get(
        "/api/v1/context",
        &[("seq", &seq), ("shard", &shard.to_string())],
    );
    assert_eq!(status, 200, "{ctx}");
    let hits = ctx["hits"].as_array().expect("hits");
    assert!(hits.iter().any(|h| h["msg"] == "working on it"), "{ctx}");
    assert!(hits.iter().all(|h| h["shard"] == shard), "{ctx}");
    assert_eq!(other.get("/api/v1/context", &[("seq", &seq)]).0, 400);
}
