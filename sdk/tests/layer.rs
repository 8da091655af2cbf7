//! The tracing layer and transport against a real listening socket standing in for the
//! agent (it only has to accept newline-delimited lines), and the real spill directory.
//!
//! The two child-process tests re-run this test binary with `SPOOR_TEST_CHILD` set, so the
//! child is a real process with the SDK installed globally (panic hook included).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoor_sdk::config::AgentAddr;
use spoor_sdk::{Config, Event};
use tracing_subscriber::layer::SubscriberExt as _;

/// A Unix socket that collects every complete line it is sent.
struct Listener {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start(path: &Path) -> Listener {
        let listener = UnixListener::bind(path).expect("bind the stand-in agent socket");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&lines), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match reader.read_until(b'\n', &mut buf) {
                            Ok(0) | Err(_) => return,
                            // An unterminated fragment at the end of a stream is not a line.
                            Ok(_) if !buf.ends_with(b"\n") => return,
                            Ok(_) => l
                                .lock()
                                .expect("lines")
                                .push(String::from_utf8_lossy(&buf).trim_end().to_string()),
                        }
                    }
                });
            }
        });
        Listener {
            path: path.to_path_buf(),
            lines,
            stop,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} lines",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.agent = AgentAddr::Unix(dir.join("agent.sock"));
    c.spill.dir = dir.join("spill");
    c.version = Some("1.4.2+a1b2c3d".into());
    c.host = "test-host".into();
    c.instance = Some("i-0abc".into());
    c.flush_timeout = Duration::from_secs(10);
    c.panic_hook = false;
    c
}

/// Runs `f` with the layer as the thread's subscriber, then drops the guard (flush).
fn with_layer(config: Config, f: impl FnOnce()) -> spoor_sdk::FlushReport {
    let (layer, guard) = spoor_sdk::spoor_layer(config).expect("layer");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    let report = guard.flush();
    drop(guard);
    report
}

fn spill_lines(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = match std::fs::read_dir(dir.join("spill")) {
        Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        spoor_sdk::spill::SpillFileName::parse(name).expect("only spill files in the spill dir")
    });
    names
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("read spill file");
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "whole lines only in {}",
                p.display()
            );
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

fn parse(line: &str) -> Event {
    let (event, flags) = Event::from_line(line.as_bytes());
    assert!(
        flags.logfmt && !flags.parse_error,
        "not clean logfmt: {line}"
    );
    event
}

/// How often each value of `key` occurs among `lines`.
fn counts(lines: &[String], key: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in lines {
        if let Some(v) = parse(line).get(key) {
            *out.entry(v.to_string()).or_default() += 1;
        }
    }
    out
}

#[track_caller]
fn assert_each_once(lines: &[String], key: &str, n: usize) {
    let counts = counts(lines, key);
    for i in 0..n {
        match counts.get(&i.to_string()) {
            Some(1) => {}
            Some(c) => panic!("{key}={i} found {c} times"),
            None => panic!("{key}={i} lost"),
        }
    }
    assert_eq!(counts.len(), n, "unexpected {key} values");
}

#[test]
fn every_line_has_the_reserved_keys_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let report = with_layer(config(dir.path()), || {
        tracing::info!(
            user = "ada lovelace",
            amount = 12,
            ok = true,
            ratio = 0.5,
            "charge done"
        );
        tracing::warn!(target: "billing", "no fields");
    });
    assert!(report.all_sent(), "{report}");
    let lines = agent.wait_for("two lines", |l| l.len() == 2);
    let first = parse(&lines[0]);
    let keys: Vec<&str> = first.pairs().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "ts", "level", "msg", "version", "host", "pid", "instance", "user", "amount", "ok",
            "ratio"
        ]
    );
    let ts = first.get("ts").expect("ts");
    assert_eq!(
        ts.len(),
        "2026-11-30T03:21:03.123456789Z".len(),
        "nanoseconds and Z: {ts}"
    );
    assert!(ts.ends_with('Z'));
    let parsed = first.timestamp().expect("has ts").expect("RFC 3339");
    assert!(
        (time::OffsetDateTime::now_utc() - parsed)
            .whole_seconds()
            .abs()
            < 60
    );
    assert_eq!(first.get("level"), Some("info"));
    assert_eq!(first.get("msg"), Some("charge done"));
    assert_eq!(first.get("version"), Some("1.4.2+a1b2c3d"));
    assert_eq!(first.get("host"), Some("test-host"));
    assert_eq!(
        first.get("pid"),
        Some(std::process::id().to_string().as_str())
    );
    assert_eq!(first.get("instance"), Some("i-0abc"));
    assert_eq!(first.get("user"), Some("ada lovelace"));
    assert_eq!(
        (first.get("amount"), first.get("ok"), first.get("ratio")),
        (Some("12"), Some("true"), Some("0.5"))
    );
    assert!(
        lines[0].contains(r#"user="ada lovelace""#),
        "quoted: {}",
        lines[0]
    );
    let second = parse(&lines[1]);
    assert_eq!(
        (second.get("level"), second.get("msg")),
        (Some("warn"), Some("no fields"))
    );
    assert!(spill_lines(dir.path()).is_empty());
}

#[test]
fn local_time_writes_an_offset_and_the_filter_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let mut c = config(dir.path());
    c.local_time = true;
    c.filter = "warn,chatty=debug".parse().expect("filter");
    with_layer(c, || {
        tracing::info!("filtered out");
        tracing::debug!(target: "chatty", "kept");
        tracing::warn!("kept too");
    });
    let lines = agent.wait_for("two lines", |l| l.len() == 2);
    let msgs: Vec<String> = lines
        .iter()
        .map(|l| parse(l).get("msg").unwrap_or("").to_string())
        .collect();
    assert_eq!(msgs, ["kept", "kept too"]);
    // The offset is the machine's; either way it is an explicit offset with nanoseconds.
    let ts = parse(&lines[0]).get("ts").expect("ts").to_string();
    assert!(
        ts.ends_with('Z') || ts[ts.len() - 6..].starts_with(['+', '-']),
        "{ts}"
    );
    assert_eq!(
        ts.split('.')
            .nth(1)
            .map(|f| f.chars().take_while(char::is_ascii_digit).count()),
        Some(9)
    );
}

#[test]
fn span_fields_are_included_and_the_innermost_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    with_layer(config(dir.path()), || {
        let outer = tracing::info_span!("outer", a = 1, b = "outer", shared = "outer");
        let _o = outer.enter();
        let inner = tracing::info_span!("inner", b = "inner", c = tracing::field::Empty);
        let _i = inner.enter();
        inner.record("c", "recorded later");
        tracing::info!(shared = "event", d = 4, "in both spans");
        drop(_i);
        tracing::info!("outer only");
    });
    let lines = agent.wait_for("two lines", |l| l.len() == 2);
    let e = parse(&lines[0]);
    let fields: Vec<(&str, &str)> = e
        .pairs()
        .filter(|(k, _)| ["a", "b", "c", "d", "shared"].contains(k))
        .collect();
    assert_eq!(
        fields,
        [
            ("a", "1"),
            ("b", "inner"),
            ("c", "recorded later"),
            ("shared", "event"),
            ("d", "4")
        ]
    );
    let e = parse(&lines[1]);
    assert_eq!(
        (e.get("b"), e.get("c"), e.get("shared")),
        (Some("outer"), None, Some("outer"))
    );
}

#[test]
fn a_task_scope_labels_every_line_inside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let mut c = config(dir.path());
    c.task.task = Some("default_task".into());
    with_layer(c, || {
        {
            let _run = spoor_sdk::task("parse_email", "01JD0000000000000000000000", 2, 1);
            tracing::info!("inside");
            let _child = spoor_sdk::task("send_reply", "child-run", 1, 2);
            tracing::info!(kind = "deadletter", "in the child run");
        }
        tracing::info!("outside");
    });
    let lines = agent.wait_for("three lines", |l| l.len() == 3);
    let keys = |e: &Event| {
        ["task", "task_id", "attempt", "depth", "kind"].map(|k| e.get(k).map(str::to_string))
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        keys(&parse(&lines[0])),
        [
            s("parse_email"),
            s("01JD0000000000000000000000"),
            s("2"),
            s("1"),
            None
        ]
    );
    assert_eq!(
        keys(&parse(&lines[1])),
        [
            s("send_reply"),
            s("child-run"),
            s("1"),
            s("2"),
            s("deadletter")
        ]
    );
    assert_eq!(
        keys(&parse(&lines[2])),
        [s("default_task"), None, None, None, None]
    );
    // Reserved keys sit in their reserved places, not among the fields.
    let e = parse(&lines[1]);
    let order: Vec<&str> = e.pairs().map(|(k, _)| k).collect();
    assert_eq!(
        &order[..8],
        [
            "ts", "level", "msg", "task", "task_id", "attempt", "depth", "version"
        ]
    );
    assert_eq!(order.last(), Some(&"kind"));
}

#[test]
fn lines_from_one_thread_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let n = 5000;
    let report = with_layer(config(dir.path()), || {
        for i in 0..n {
            tracing::info!(i, "ordered");
        }
    });
    assert!(report.all_sent(), "{report}");
    let lines = agent.wait_for("all lines", |l| l.len() == n);
    for (expected, line) in lines.iter().enumerate() {
        assert_eq!(parse(line).get("i"), Some(expected.to_string().as_str()));
    }
}

#[test]
fn agent_down_spills_and_agent_back_gets_new_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layer, guard) = spoor_sdk::spoor_layer(config(dir.path())).expect("layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..20 {
            tracing::info!(i, phase = "down", "agent is down");
        }
        let report = guard.flush();
        assert!(report.complete, "{report}");
        assert_eq!(report.spilled, 20, "{report}");
        let spilled = spill_lines(dir.path());
        assert_each_once(&spilled, "i", 20);

        let agent = Listener::start(&dir.path().join("agent.sock"));
        let mut up = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.lines().is_empty() {
            assert!(Instant::now() < deadline, "the SDK never reconnected");
            tracing::info!(up, phase = "up", "agent is back");
            up += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        for j in 0..50 {
            tracing::info!(j, phase = "after", "connected");
        }
        assert!(guard.flush().complete);
        let socket = agent.wait_for("the lines after reconnecting", |l| {
            counts(l, "phase").get("after") == Some(&50)
        });
        let spilled = spill_lines(dir.path());
        assert_eq!(
            counts(&spilled, "phase").get("after"),
            None,
            "connected lines went to the socket"
        );
        assert_eq!(counts(&socket, "phase").get("down"), None);
        let all: Vec<String> = socket.iter().chain(&spilled).cloned().collect();
        let ups: Vec<String> = all
            .iter()
            .filter(|l| parse(l).get("phase") == Some("up"))
            .cloned()
            .collect();
        assert_each_once(&ups, "up", up);
    });
    drop(guard);
}

#[test]
fn a_burst_from_eight_threads_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let mut c = config(dir.path());
    c.queue_capacity = 64; // small, so the burst overflows into the spill file
    let (layer, guard) = spoor_sdk::spoor_layer(c).expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let per_thread = 5000;
    std::thread::scope(|s| {
        for t in 0..8 {
            let dispatch = dispatch.clone();
            s.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..per_thread {
                        tracing::info!(n = t * per_thread + i, thread = t, "burst");
                    }
                });
            });
        }
    });
    let report = guard.flush();
    assert!(report.complete, "{report}");
    drop(guard);
    let total = 8 * per_thread;
    assert_eq!(report.dropped, 0, "{report}");
    assert_eq!(report.sent + report.spilled, total as u64, "{report}");
    let socket = agent.wait_for("everything sent", |l| l.len() as u64 == report.sent);
    let all: Vec<String> = socket.into_iter().chain(spill_lines(dir.path())).collect();
    assert_each_once(&all, "n", total);
}

#[test]
fn a_full_spill_directory_counts_drops_and_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.spill.dir_max_bytes = 4096;
    c.spill.file_max_bytes = 1024;
    let (layer, guard) = spoor_sdk::spoor_layer(c).expect("layer");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..200 {
            tracing::info!(i, "nowhere to go");
        }
        let report = guard.flush();
        assert!(report.dropped > 0, "{report}");
        assert_eq!(report.spilled + report.dropped, 200, "{report}");
        let agent = Listener::start(&dir.path().join("agent.sock"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.lines().len() < 2 {
            assert!(Instant::now() < deadline, "the SDK never reconnected");
            tracing::info!("agent is back");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first line through the socket reports the drops not reported yet; a notice
        // may also have fitted into the spill file while lines did not.
        let first = parse(&agent.lines()[0]);
        assert_eq!(first.get("level"), Some("warn"));
        assert_eq!(first.get("msg"), Some("spoor dropped events"));
        let all: Vec<String> = agent
            .lines()
            .into_iter()
            .chain(spill_lines(dir.path()))
            .collect();
        let reported: u64 = all
            .iter()
            .map(|l| parse(l))
            .filter(|e| e.get("msg") == Some("spoor dropped events"))
            .map(|e| {
                e.get("dropped")
                    .and_then(|d| d.parse::<u64>().ok())
                    .expect("dropped=N")
            })
            .sum();
        assert_eq!(
            reported,
            guard.stats().dropped,
            "every drop is reported once"
        );
        assert_eq!(parse(&agent.lines()[1]).get("msg"), Some("agent is back"));
    });
    drop(guard);
}

#[test]
fn debug_lines_of_a_run_are_written_only_when_it_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let mut c = config(dir.path());
    c.debug_buffer_bytes = Some(64 * 1024); // the filter stays at `info`
    with_layer(c, || {
        {
            let _run = spoor_sdk::task("quiet", "run-ok", 1, 0);
            tracing::debug!(step = 1, "held");
            tracing::trace!(step = 2, "held");
            tracing::info!("ok run info");
        }
        {
            let _run = spoor_sdk::task("noisy", "run-bad", 1, 0);
            tracing::debug!(step = 1, "context one");
            tracing::info!("bad run info");
            tracing::trace!(step = 2, "context two");
            tracing::error!("charge failed");
            tracing::debug!(step = 3, "after the error");
        }
        tracing::debug!("outside any run, filtered");
    });
    let lines = agent.wait_for("the run lines", |l| l.len() == 6);
    std::thread::sleep(Duration::from_millis(100));
    let got: Vec<(String, String, String)> = agent
        .lines()
        .iter()
        .map(|l| parse(l))
        .map(|e| {
            let g = |k| e.get(k).unwrap_or("").to_string();
            (g("task_id"), g("level"), g("msg"))
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        got,
        [
            s("run-ok", "info", "ok run info"),
            s("run-bad", "info", "bad run info"),
            s("run-bad", "debug", "context one"),
            s("run-bad", "trace", "context two"),
            s("run-bad", "error", "charge failed"),
            s("run-bad", "debug", "after the error"),
        ],
        "{lines:#?}"
    );
}

#[test]
fn the_debug_ring_evicts_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let mut c = config(dir.path());
    c.debug_buffer_bytes = Some(2048);
    with_layer(c, || {
        let _run = spoor_sdk::task("t", "r", 1, 0);
        for i in 0..100 {
            tracing::debug!(i, "step");
        }
        tracing::error!("failed");
    });
    let lines = agent.wait_for("the flushed ring", |l| {
        l.last().is_some_and(|l| l.contains("failed"))
    });
    let notice = parse(&lines[0]);
    assert_eq!(notice.get("msg"), Some("spoor debug buffer evicted events"));
    let evicted: usize = notice
        .get("evicted")
        .and_then(|n| n.parse().ok())
        .expect("evicted=N");
    let kept: Vec<usize> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| parse(l).get("i").and_then(|i| i.parse().ok()).expect("i"))
        .collect();
    assert_eq!(
        kept,
        (evicted..100).collect::<Vec<_>>(),
        "the newest, in order"
    );
    assert!(!kept.is_empty() && evicted > 0);
}

#[test]
fn a_field_that_logs_while_formatted_does_not_deadlock() {
    struct Noisy;
    impl std::fmt::Debug for Noisy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            tracing::info!("from inside Debug");
            f.write_str("noisy")
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    with_layer(
        config(dir.path()),
        || tracing::info!(value = ?Noisy, "outer"),
    );
    // `tracing` itself hands an event raised inside a subscriber to no subscriber; what
    // matters here is that the outer line is written and nothing hangs.
    let lines = agent.wait_for("the outer line", |l| !l.is_empty());
    assert_eq!(parse(&lines[0]).get("msg"), Some("outer"));
    assert_eq!(parse(&lines[0]).get("value"), Some("noisy"));
}

// ---- child processes -------------------------------------------------------------------

/// In a child process (`SPOOR_TEST_CHILD=panic`): log 10,000 lines, then panic.
/// In a child process (`SPOOR_TEST_CHILD=exit`): log 1,000 lines, flush, `process::exit(3)`.
/// Otherwise this test does nothing.
#[test]
fn child_process_body() {
    let Ok(role) = std::env::var("SPOOR_TEST_CHILD") else {
        return;
    };
    let guard = spoor_sdk::init!().expect("init from the environment");
    let _run = spoor_sdk::task("child", "child-run", 1, 0);
    match role.as_str() {
        "panic" => {
            for i in 0..10_000 {
                tracing::info!(i, "child line");
            }
            let _keep = guard;
            panic!("the child gives up");
        }
        "exit" => {
            for i in 0..1_000 {
                tracing::info!(i, "child line");
            }
            let report = spoor_sdk::flush().expect("installed");
            assert!(report.complete);
            std::process::exit(3);
        }
        other => panic!("unknown role {other}"),
    }
}

fn run_child(role: &str, dir: &Path, queue: usize) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_process_body",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SPOOR_TEST_CHILD", role)
        .env(
            "SPOOR_AGENT",
            format!("unix:{}", dir.join("agent.sock").display()),
        )
        .env("SPOOR_SPILL_DIR", dir.join("spill"))
        .env("SPOOR_QUEUE_CAPACITY", queue.to_string())
        .env("SPOOR_FLUSH_TIMEOUT", "10s")
        .output()
        .expect("run the child")
}

#[test]
fn a_child_that_panics_loses_nothing_and_logs_the_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    // A small queue, so part of the output goes through the spill file.
    let out = run_child("panic", dir.path(), 256);
    assert!(!out.status.success(), "the child panicked");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the child gives up"),
        "the previous hook still ran: {stderr}"
    );
    // The child has exited; the socket reader may still be catching up. The fatal event
    // itself may be on the socket or, when the queue was full, in a spill file.
    let spilled = spill_lines(dir.path());
    let socket = agent.wait_for("all 10,001 lines", |l| l.len() + spilled.len() >= 10_001);
    let all: Vec<String> = socket.iter().chain(&spilled).cloned().collect();
    let child_lines: Vec<String> = all
        .iter()
        .filter(|l| parse(l).get("msg") == Some("child line"))
        .cloned()
        .collect();
    assert_each_once(&child_lines, "i", 10_000);
    let fatal: Vec<Event> = all
        .iter()
        .map(|l| parse(l))
        .filter(|e| e.get("level") == Some("fatal"))
        .collect();
    assert_eq!(fatal.len(), 1, "one fatal event");
    let fatal = &fatal[0];
    assert_eq!(fatal.get("msg"), Some("panicked: the child gives up"));
    assert!(
        fatal
            .get("location")
            .is_some_and(|l| l.contains("layer.rs:")),
        "{fatal}"
    );
    assert_eq!(
        fatal.get("task_id"),
        Some("child-run"),
        "inside the task scope"
    );
    assert_eq!(
        fatal.get("version"),
        Some(env!("CARGO_PKG_VERSION")),
        "init! filled the version"
    );
}

#[test]
fn flush_covers_process_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Listener::start(&dir.path().join("agent.sock"));
    let out = run_child("exit", dir.path(), 8192);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spilled = spill_lines(dir.path());
    let socket = agent.wait_for("every line", |l| l.len() + spilled.len() >= 1000);
    let all: Vec<String> = socket.into_iter().chain(spilled).collect();
    assert_each_once(&all, "i", 1000);
}
