//! The dead-letter store end to end: dead-letter reports (as the SDK writes them) become
//! entries; replays go to a local HTTP receiver named by the collector's config, exactly
//! once, with the idempotency key; the loop guard, dry run and rate limit hold; a collector
//! killed mid-replay resumes without sending anything twice; an event naming a URL cannot
//! make the collector call it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use spoor_sdk::deadletter::DeadLetter;
use spoor_sdk::task_run::TaskRun;

use crate::harness::{Collector, wait_for};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    path: String,
    pub(crate) idempotency_key: String,
    body: Value,
    at: Instant,
}

/// A local HTTP server that records every request and answers `status` after `delay`.
pub(crate) struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (reqs, st) = (requests.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(r) = read_request(&mut s) else {
                    continue;
                };
                reqs.lock().expect("lock").push(r);
                std::thread::sleep(delay);
                let code = st.load(Ordering::SeqCst);
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Length: 7\r\nConnection: close\r\n\r\nanswer!"
                );
            }
        });
        Self {
            port,
            requests,
            status,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.requests.lock().expect("lock").clone()
    }

    fn keys(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|r| r.idempotency_key)
            .collect()
    }
}

fn read_request(s: &mut std::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some(Received {
        path,
        idempotency_key: header("idempotency-key"),
        body: serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null),
        at: Instant::now(),
    })
}

/// A listener that only counts connections (it must get none).
fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the trap");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if s.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, hits)
}

/// A dead-letter report line as the SDK writes it, plus extra fields.
pub(crate) fn report(task: &str, task_id: &str, error: &str, extra: &str) -> String {
    let run = TaskRun::new(task, task_id).with_payload_ref(format!("payload-{task_id}"));
    let now = SystemTime::now();
    let mut event = DeadLetter::new(&run, 3, error, now - Duration::from_secs(60), now).to_event();
    event.push("host", "worker-1");
    let mut line = event.to_line();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line.push('\n');
    line
}

fn config(receiver: &Receiver, max_replays: u32) -> String {
    format!(
        r#"
[[dlq.target]]
task = "*"
url = "{}"
max_replays = {max_replays}
timeout = "10s"
"#,
        receiver.url("/replay")
    )
}

/// The entries the CLI lists as JSON, by task_id.
fn listed(c: &Collector, args: &[&str]) -> HashMap<String, Value> {
    let mut all = vec!["dlq", "list", "--output", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = c.cli(&all);
    assert_eq!(code, 0, "spoor dlq list: {err}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .map(|e| (e["task_id"].as_str().unwrap_or("").to_string(), e))
        .collect()
}

fn wait_listed(c: &Collector, args: &[&str], n: usize) -> HashMap<String, Value> {
    wait_for(
        &format!("{n} dead-letter entries"),
        Duration::from_secs(30),
        || {
            let l = listed(c, args);
            (l.len() == n).then_some(l)
        },
    )
}

#[test]
fn dead_letters_are_listed_and_replayed_exactly_once_under_the_guards() {
    let receiver = Receiver::start(Duration::ZERO);
    let (trap_port, trap_hits) = trap();
    let c = Collector::start_with_config(&config(&receiver, 2));

    let mut body = String::new();
    body.push_str(&report("parse_email", "run-1", "smtp timeout", ""));
    body.push_str(&report("parse_email", "run-2", "connection refused", ""));
    body.push_str(&report(
        "parse_email",
        "run-3",
        "bad input",
        &format!("url=http://127.0.0.1:{trap_port}/steal target=http://127.0.0.1:{trap_port}/"),
    ));
    body.push_str("level=error task=parse_email msg=\"an ordinary error\"\n");
    let (status, _) = c.ingest(body.as_bytes(), Some("dl-1"));
    assert_eq!(status, 200);

    // `spoor dlq list` shows them with the right fields.
    let entries = wait_listed(&c, &[], 3);
    let e1 = &entries["run-1"];
    assert_eq!(e1["task"], "parse_email");
    assert_eq!(e1["attempts"], 3);
    assert_eq!(e1["error"], "smtp timeout");
    assert_eq!(e1["payload_ref"], "payload-run-1");
    assert_eq!(e1["host"], "worker-1");
    assert_eq!(e1["state"], "pending");
    assert!(e1["first_failed"].is_string() && e1["last_failed"].is_string());
    let id = |t: &str| entries[t]["id"].as_u64().expect("id");
    let (code, table, _) = c.cli(&["dlq", "list", "--error", "SMTP"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("run-1") && !table.contains("run-2"),
        "{table}"
    );

    // A dry run lists and sends nothing.
    let (code, out, err) = c.cli(&["dlq", "replay", "--task", "parse_email", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("would send").count(), 3, "{out}");
    assert!(out.contains(&receiver.url("/replay")), "{out}");

    let (code, out, _) = c.cli(&["dlq", "replay", &id("run-1").to_string(), "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would send") && out.contains("run-1"), "{out}");

    // Replay by id: delivered exactly once, with the idempotency key and the payload_ref.
    let (code, out, err) = c.cli(&["dlq", "replay", &id("run-1").to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].idempotency_key, "run-1");
    assert_eq!(got[0].path, "/replay");
    assert_eq!(got[0].body["payload_ref"], "payload-run-1");
    assert_eq!(got[0].body["task"], "parse_email");
    assert_eq!(listed(&c, &[])["run-1"]["state"], "replayed");
    // Replaying a replayed entry is refused; nothing is sent.
    let (code, _, err) = c.cli(&["dlq", "replay", &id("run-1").to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("replayed"), "{err}");

    // A failing target: failed with the answer kept, then the loop guard after 2 sends.
    receiver.status.store(500, Ordering::SeqCst);
    for _ in 0..2 {
        let (code, _, _) = c.cli(&["dlq", "replay", &id("run-2").to_string()]);
        assert_eq!(code, 1, "a failed replay exits 1");
    }
    let e2 = &listed(&c, &[])["run-2"];
    assert_eq!(e2["state"], "failed");
    assert_eq!(e2["replays"], 2);
    assert_eq!(e2["last_attempt"]["status"], 500);
    assert_eq!(e2["last_attempt"]["answer"], "answer!");
    let (code, _, err) = c.cli(&["dlq", "replay", &id("run-2").to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("loop guard"), "{err}");
    let keys = receiver.keys();
    assert_eq!(keys.iter().filter(|k| *k == "run-2").count(), 2, "{keys:?}");
    let (code, out, _) = c.cli(&["dlq", "replay", &id("run-2").to_string(), "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("refused") && out.contains("loop guard"),
        "{out}"
    );

    // The entry that names a URL is replayed to the configured target only.
    receiver.status.store(200, Ordering::SeqCst);
    let (code, out, err) = c.cli(&["dlq", "replay", "--error", "bad input"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed=1"), "{out}");
    assert_eq!(receiver.keys().last().map(String::as_str), Some("run-3"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the event's URL was called"
    );

    // Discard, audited; discarding twice is refused.
    let (code, out, err) = c.cli(&["dlq", "discard", &id("run-2").to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("discarded"), "{out}");
    let (code, _, _) = c.cli(&["dlq", "discard", &id("run-2").to_string()]);
    assert_ne!(code, 0);
    let (code, shown, _) = c.cli(&["dlq", "show", &id("run-2").to_string()]);
    assert_eq!(code, 0);
    assert!(shown.contains("\"discarded\""), "{shown}");

    // Every replay and discard is in the audit log as kind=audit.
    let audit = wait_for("the audit records", Duration::from_secs(30), || {
        let (_, body) = c.get(
            "/api/v1/search",
            &[("q", "kind:audit"), ("limit", "100"), ("from", "1h")],
        );
        let hits = body["hits"].as_array()?.clone();
        let actions: Vec<String> = hits
            .iter()
            .filter_map(|h| h["action"].as_str().map(str::to_string))
            .collect();
        (actions.iter().filter(|a| *a == "dlq.replay.done").count() >= 4
            && actions.iter().any(|a| a == "dlq.discard"))
        .then_some(hits)
    });
    assert!(
        audit
            .iter()
            .any(|h| h["action"] == "dlq.discard" && h["caller"] == "anonymous"),
        "{audit:?}"
    );
    // Metrics by state.
    wait_for("dlq metrics", Duration::from_secs(10), || {
        (c.metric("spoor_dlq_entries{state=\"replayed\"}") == Some(2)
            && c.metric("spoor_dlq_entries{state=\"discarded\"}") == Some(1))
        .then_some(())
    });
}

#[test]
fn dead_letter_replay_rate_limit_holds() {
    let receiver = Receiver::start(Duration::ZERO);
    let c = Collector::start_with_config(&config(&receiver, 3));
    let body: String = (0..6)
        .map(|i| report("rated", &format!("r-{i}"), "boom", ""))
        .collect();
    assert_eq!(c.ingest(body.as_bytes(), Some("rated")).0, 200);
    wait_listed(&c, &["--task", "rated"], 6);
    let (code, out, err) = c.cli(&["dlq", "replay", "--task", "rated", "--rate", "5/s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed=6"), "{out}");
    let got = receiver.received();
    assert_eq!(got.len(), 6);
    // 5/s means requests leave at least 200 ms apart; the receiver sees them with the
    // jitter of a loaded machine, so the bounds are generous, but there is no burst.
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(100), "requests {gap:?} apart");
    }
    let span = got[5].at - got[0].at;
    assert!(span >= Duration::from_millis(800), "6 requests in {span:?}");
    // `--max` sends at most that many.
    let more: String = (0..3)
        .map(|i| report("capped", &format!("c-{i}"), "boom", ""))
        .collect();
    assert_eq!(c.ingest(more.as_bytes(), Some("capped")).0, 200);
    wait_listed(&c, &["--task", "capped"], 3);
    let (code, out, err) = c.cli(&["dlq", "replay", "--task", "capped", "--max", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed=2"), "{out}");
    assert_eq!(receiver.received().len(), 8);
}

#[test]
fn dead_letter_replay_resumes_after_kill_without_duplicates() {
    let receiver = Receiver::start(Duration::from_millis(300));
    let mut c = Collector::start_with_config(&config(&receiver, 3));
    let body: String = (0..8)
        .map(|i| report("slow", &format!("s-{i}"), "boom", ""))
        .collect();
    assert_eq!(c.ingest(body.as_bytes(), Some("slow")).0, 200);
    wait_listed(&c, &["--task", "slow"], 8);
    let (status, answer) = c.post("/api/v1/dlq/replay", &json!({"task": "slow"}));
    assert_eq!(status, 202, "{answer}");
    let job = answer["job"]["id"].as_u64().expect("a job id");
    wait_for("a few replays", Duration::from_secs(30), || {
        (receiver.received().len() >= 3).then_some(())
    });
    c.kill9();
    let before = receiver.received().len();
    assert!(before < 8, "the job finished before the kill");
    c.restart_with_config();
    let done = wait_for("the job to finish", Duration::from_secs(60), || {
        let (_, j) = c.get(&format!("/api/v1/dlq/jobs/{job}"), &[]);
        (j["done"] == true).then_some(j)
    });
    let keys = receiver.keys();
    let mut seen = std::collections::HashSet::new();
    for k in &keys {
        assert!(seen.insert(k.clone()), "{k} was sent twice: {keys:?}");
    }
    assert_eq!(
        done["replayed"].as_u64().unwrap_or(0) + done["failed"].as_u64().unwrap_or(0),
        8,
        "{done}"
    );
    // At most the one in flight at the kill is failed ("interrupted"), not re-sent.
    let entries = listed(&c, &["--task", "slow"]);
    let interrupted: Vec<&Value> = entries
        .values()
        .filter(|e| e["state"] == "failed")
        .collect();
    assert!(interrupted.len() <= 1, "{interrupted:?}");
    for e in &interrupted {
        assert!(
            e["last_attempt"]["answer"]
                .as_str()
                .is_some_and(|a| a.contains("interrupted")),
            "{e}"
        );
    }
    for e in entries.values().filter(|e| e["state"] == "replayed") {
        let k = e["task_id"].as_str().unwrap_or("");
        assert!(
            keys.iter().any(|x| x == k),
            "{k} replayed but never received"
        );
    }
    assert!(keys.len() <= 8, "{keys:?}");
    eprintln!(
        "received {} before the kill, {} in all; job {done}",
        before,
        keys.len()
    );

    // The store is derived: deleted, it is rebuilt from the audit log (entries pending).
    c.kill9();
    std::fs::remove_dir_all(c.data_dir().join("dlq")).expect("remove the dlq store");
    c.restart_with_config();
    let rebuilt = wait_listed(&c, &["--task", "slow"], 8);
    assert!(rebuilt.values().all(|e| e["state"] == "pending"));
    assert_eq!(receiver.keys().len(), keys.len(), "a rebuild sends nothing");
}

#[test]
fn dead_letter_api_needs_the_admin_scope() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (read, admin) = (
        dir.path().join("read.token"),
        dir.path().join("admin.token"),
    );
    std::fs::write(&read, "read-secret\n").expect("token");
    std::fs::write(&admin, "admin-secret\n").expect("token");
    let c = Collector::start_with_config(&format!(
        r#"
[[tokens]]
name = "reader"
scopes = ["read"]
token_file = "{}"
[[tokens]]
name = "ops"
scopes = ["admin"]
token_file = "{}"
[[dlq.target]]
url = "http://127.0.0.1:9/never"
"#,
        read.display(),
        admin.display()
    ));
    let http = reqwest::blocking::Client::new();
    let status = |token: Option<&str>, post: bool, path: &str| {
        let url = format!("{}{path}", c.url());
        let mut req = if post {
            http.post(url).json(&json!({"dry_run": true}))
        } else {
            http.get(url)
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().expect("request").status().as_u16()
    };
    assert_eq!(status(None, false, "/api/v1/dlq"), 401);
    assert_eq!(status(Some("read-secret"), false, "/api/v1/dlq"), 403);
    assert_eq!(status(Some("read-secret"), true, "/api/v1/dlq/replay"), 403);
    assert_eq!(
        status(Some("read-secret"), true, "/api/v1/dlq/1/discard"),
        403
    );
    assert_eq!(status(Some("admin-secret"), false, "/api/v1/dlq"), 200);
    assert_eq!(
        status(Some("admin-secret"), true, "/api/v1/dlq/replay"),
        200
    );
    assert_eq!(status(Some("admin-secret"), false, "/api/v1/dlq/7"), 404);
    // The CLI takes the token from a file.
    let (code, _, err) = c.cli(&["dlq", "list", "--token-file", &admin.display().to_string()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn dead_letters_travel_through_a_real_agent() {
    let receiver = Receiver::start(Duration::ZERO);
    let mut c = Collector::start_with_config(&config(&receiver, 3));
    let agent = crate::harness::Agent::start(&c, &[]);
    // A task's dead-letter report, sent the way the SDK's transport does: a logfmt line.
    agent.send_tcp(report("link_analysis", "run-via-agent", "connection refused", "").as_bytes());
    let entries = wait_listed(&c, &["--task", "link_analysis"], 1);
    let e = &entries["run-via-agent"];
    assert_eq!(e["error"], "connection refused");
    assert_eq!(e["payload_ref"], "payload-run-via-agent");
    let (code, out, err) = c.cli(&["dlq", "replay", &e["id"].to_string()]);
    assert_eq!(code, 0, "{out}{err}\n{}", agent.log());
    assert_eq!(receiver.keys(), ["run-via-agent"]);
    // A clean stop (SIGTERM) stops the follower and jobs and exits 0.
    drop(agent);
    c.stop();
}
