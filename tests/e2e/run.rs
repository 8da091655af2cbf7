//! `spoor run` around shell scripts, with a plain TCP listener standing in for the agent
//! (the SDK only needs something that accepts newline-delimited lines).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spoor_sdk::Event;

use crate::harness::{run_cli, wait_for};

/// Accepts connections and keeps every complete line.
struct LineSink {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineSink {
    fn start() -> LineSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn);
                    let mut buf = Vec::new();
                    while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                        if buf.ends_with(b"\n") {
                            l.lock()
                                .expect("lines")
                                .push(String::from_utf8_lossy(&buf).trim_end().to_string());
                        }
                        buf.clear();
                    }
                });
            }
        });
        LineSink { port, lines }
    }

    /// Waits for the final event and returns every line as an event.
    fn events_until_final(&self) -> Vec<Event> {
        wait_for("the final event", Duration::from_secs(20), || {
            let lines = self.lines.lock().expect("lines").clone();
            lines
                .iter()
                .any(|l| l.contains("duration_ms="))
                .then(|| parse_all(&lines))
        })
    }
}

fn parse_all(lines: &[String]) -> Vec<Event> {
    lines
        .iter()
        .map(|l| Event::from_line(l.as_bytes()).0)
        .collect()
}

fn spoor_run(args: &[&str], agent: &str, spill: &Path) -> (i32, String, String) {
    let spill = spill.to_str().expect("utf-8 temp path");
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    run_cli(
        &all,
        &[
            ("SPOOR_AGENT", agent),
            ("SPOOR_SPILL_DIR", spill),
            ("SPOOR_VERSION", "2.0.0"),
        ],
    )
}

fn by_msg(events: &[Event]) -> HashMap<String, Event> {
    events
        .iter()
        .map(|e| (e.get("msg").unwrap_or("").to_string(), e.clone()))
        .collect()
}

const SCRIPT: &str = r#"
echo "hello from stdout"
echo 'level=error msg="charge failed" amount=12' >&2
echo "plain complaint" >&2
echo "second stdout line"
exit 3
"#;

#[test]
fn a_failing_script_becomes_events_and_keeps_its_status() {
    let sink = LineSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = format!("tcp:127.0.0.1:{}", sink.port);
    let (code, stdout, stderr) = spoor_run(
        &[
            "--task",
            "shell_job",
            "--task-id",
            "run-1",
            "--attempt",
            "2",
            "--",
            "sh",
            "-c",
            SCRIPT,
        ],
        &agent,
        dir.path(),
    );
    assert_eq!(code, 3, "the program's own status; stderr: {stderr}");
    assert!(stdout.is_empty(), "no passthrough by default: {stdout}");
    let events = sink.events_until_final();
    assert_eq!(
        events.len(),
        5,
        "four lines and the final event: {events:?}"
    );
    for e in &events {
        assert_eq!(
            (
                e.get("task"),
                e.get("task_id"),
                e.get("attempt"),
                e.get("depth")
            ),
            (Some("shell_job"), Some("run-1"), Some("2"), Some("0")),
            "{e}"
        );
        assert_eq!(e.get("version"), Some("2.0.0"));
        assert!(e.timestamp().is_some_and(|t| t.is_ok()), "{e}");
        assert!(e.get("host").is_some() && e.get("pid").is_some(), "{e}");
    }
    let m = by_msg(&events);
    let level = |msg: &str| m.get(msg).and_then(|e| e.get("level")).map(str::to_string);
    assert_eq!(level("hello from stdout").as_deref(), Some("info"));
    assert_eq!(level("second stdout line").as_deref(), Some("info"));
    assert_eq!(level("plain complaint").as_deref(), Some("warn"));
    assert_eq!(
        level("charge failed").as_deref(),
        Some("error"),
        "its own level"
    );
    assert_eq!(m["charge failed"].get("amount"), Some("12"));
    assert_eq!(m["charge failed"].get("stream"), Some("stderr"));
    assert_eq!(m["hello from stdout"].get("stream"), Some("stdout"));
    // Within one stream the order is kept.
    let stdout_msgs: Vec<&str> = events
        .iter()
        .filter(|e| e.get("stream") == Some("stdout"))
        .filter_map(|e| e.get("msg"))
        .collect();
    assert_eq!(stdout_msgs, ["hello from stdout", "second stdout line"]);
    let last = events.last().expect("final event");
    assert_eq!(last.get("level"), Some("error"));
    assert_eq!(last.get("exit_code"), Some("3"));
    assert_eq!(last.get("signal"), None);
    assert_eq!(last.get("lines"), Some("4"));
    assert!(
        last.get("duration_ms")
            .and_then(|d| d.parse::<u64>().ok())
            .is_some(),
        "{last}"
    );
}

#[test]
fn a_script_killed_by_a_signal_reports_the_signal() {
    let sink = LineSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = format!("tcp:127.0.0.1:{}", sink.port);
    let (code, stdout, _) = spoor_run(
        &[
            "--task",
            "doomed",
            "--passthrough",
            "--",
            "sh",
            "-c",
            "echo before the end; kill -9 $$",
        ],
        &agent,
        dir.path(),
    );
    assert_eq!(code, 128 + 9, "shell convention for SIGKILL");
    assert!(stdout.contains("before the end"), "passthrough: {stdout:?}");
    let events = sink.events_until_final();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].get("msg"), Some("before the end"));
    let last = &events[1];
    assert_eq!(
        (
            last.get("level"),
            last.get("signal"),
            last.get("signal_name")
        ),
        (Some("error"), Some("9"), Some("SIGKILL"))
    );
    assert_eq!(last.get("exit_code"), None);
    let task_id = events[0].get("task_id").expect("a generated task_id");
    assert_eq!(task_id.len(), 26);
    assert_eq!(last.get("task_id"), Some(task_id));
}

#[test]
fn with_the_agent_down_lines_go_to_the_spill_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = format!("unix:{}", dir.path().join("nobody-listens.sock").display());
    let (code, _, _) = spoor_run(
        &[
            "--task",
            "lonely",
            "--",
            "sh",
            "-c",
            "echo one; echo two; exit 0",
        ],
        &agent,
        dir.path(),
    );
    assert_eq!(code, 0);
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("spill dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if spoor_sdk::spill::SpillFileName::parse(name).is_some() {
            lines.extend(
                std::fs::read_to_string(&path)
                    .expect("read")
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    let events = parse_all(&lines);
    let msgs: Vec<&str> = events.iter().filter_map(|e| e.get("msg")).collect();
    assert_eq!(msgs, ["one", "two", "command exited"]);
    assert_eq!(events[2].get("level"), Some("info"));
    assert_eq!(events[2].get("exit_code"), Some("0"));
}

#[test]
fn a_missing_program_is_an_error_with_the_shell_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = format!("unix:{}", dir.path().join("none.sock").display());
    let (code, _, stderr) = spoor_run(
        &["--task", "t", "--", "/definitely/not/a/program"],
        &agent,
        dir.path(),
    );
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("/definitely/not/a/program"), "{stderr}");
}
