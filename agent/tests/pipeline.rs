//! End-to-end tests of the agent library: real sockets, real files, a real HTTP receiver.
//! Each test polls with a deadline; none uses a sleep as an assertion.

mod support;

use std::io::Write;
use std::time::Duration;

use support::{Receiver, TestAgent, count_by_n, field, test_config, wait_for};
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(20);

#[track_caller]
fn assert_each_once(lines: &[String], expected: impl IntoIterator<Item = String>) {
    let counts = count_by_n(lines);
    let expected: Vec<String> = expected.into_iter().collect();
    for n in &expected {
        assert_eq!(
            counts.get(n),
            Some(&1),
            "line n={n} should arrive exactly once"
        );
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "unexpected extra lines: {counts:?}"
    );
}

/// Writes `payload` to the agent's TCP input on one connection and closes it.
async fn send_tcp(agent: &TestAgent, payload: &[u8]) {
    let mut tcp = tokio::net::TcpStream::connect(agent.tcp_addr())
        .await
        .expect("connect");
    tcp.write_all(payload).await.expect("write");
    tcp.shutdown().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_lines_arrive_enriched_and_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let agent = TestAgent::start(test_config(dir.path(), &receiver.url())).await;
    let agent_id = agent.agent_id();

    let mut tcp = tokio::net::TcpStream::connect(agent.tcp_addr())
        .await
        .expect("tcp connect");
    let mut payload = String::new();
    for i in 0..100 {
        payload.push_str(&format!("level=info msg=\"tcp line\" n=t{i}\n"));
    }
    tcp.write_all(payload.as_bytes()).await.expect("tcp write");
    let mut unix = tokio::net::UnixStream::connect(agent.unix_path())
        .await
        .expect("unix connect");
    let mut payload = String::new();
    for i in 0..100 {
        payload.push_str(&format!("msg=\"over unix\" n=u{i}\r\n"));
    }
    // A last line without newline is kept when the peer closes.
    payload.push_str("n=u100 level=warn host=elsewhere ts=2026-01-01T00:00:00Z");
    unix.write_all(payload.as_bytes())
        .await
        .expect("unix write");
    unix.shutdown().await.expect("unix close");
    drop(unix);

    wait_for("201 lines", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 201
    })
    .await;
    let lines = receiver.lines();
    let expected = (0..100)
        .map(|i| format!("t{i}"))
        .chain((0..=100).map(|i| format!("u{i}")));
    assert_each_once(&lines, expected);
    for line in &lines {
        assert_eq!(
            field(line, "agent").as_deref(),
            Some(agent_id.as_str()),
            "{line}"
        );
        assert!(field(line, "host").is_some_and(|h| !h.is_empty()), "{line}");
        let ts = field(line, "ts").expect("ts");
        spoor_sdk::timestamp::parse_timestamp(&ts).expect("ts parses");
        let source = field(line, "source").expect("source");
        let n = field(line, "n").expect("n");
        assert_eq!(
            source,
            if n.starts_with('t') { "tcp" } else { "unix" },
            "{line}"
        );
    }
    let last = lines
        .iter()
        .find(|l| field(l, "n").as_deref() == Some("u100"))
        .expect("u100");
    assert_eq!(field(last, "host").as_deref(), Some("elsewhere"));
    assert_eq!(field(last, "ts").as_deref(), Some("2026-01-01T00:00:00Z"));
    receiver.with(|r| {
        for (key, agent) in &r.keys {
            assert_eq!(agent, &agent_id);
            assert!(key.starts_with(&format!("{agent_id}-")), "{key}");
        }
    });

    let health = reqwest::get(format!("http://{}/healthz", agent.config.admin))
        .await
        .expect("healthz");
    assert_eq!(health.text().await.expect("body"), "ok");
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("spoor_agent_input_events_total{input=\"tcp\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spoor_agent_input_events_total{input=\"unix\"} 101"),
        "{metrics}"
    );
    wait_for_metric(&agent, "spoor_agent_forwarded_events_total", 201.0).await;
    agent.stop().await;
}

async fn wait_for_metric(agent: &TestAgent, name: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let v = agent.metric(name).await;
        if v >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {v}, wanted {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("msg=\"file line\" n={prefix}{i}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tail_follows_rename_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("app.log");
    let receiver = Receiver::start().await;
    let mut config = test_config(dir.path(), &receiver.url());
    config.files = vec![log.to_string_lossy().into_owned()];
    append(&log, &numbered("a", 0..50));
    let agent = TestAgent::start(config).await;
    wait_for("first 50 lines", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 50
    })
    .await;

    // Rename rotation: the writer keeps its handle on the old inode for a moment.
    let rotated = logs.path().join("app.log.1");
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::fs::rename(&log, &rotated).expect("rename");
    old.write_all(numbered("b", 0..10).as_bytes())
        .expect("write to old inode");
    drop(old);
    append(&log, &numbered("c", 0..50));
    wait_for("rotated lines", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 110
    })
    .await;

    // Truncation: fewer bytes than before, so the file is shorter than the read offset.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&log, &numbered("d", 0..10));
    // CRLF and a partial last line (sent after the 1 s timeout).
    append(&log, "msg=crlf n=e0\r\nmsg=partial n=e1");
    wait_for("lines after truncation", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 122
    })
    .await;

    let lines = receiver.lines();
    let expected = (0..50)
        .map(|i| format!("a{i}"))
        .chain((0..10).map(|i| format!("b{i}")))
        .chain((0..50).map(|i| format!("c{i}")))
        .chain((0..10).map(|i| format!("d{i}")))
        .chain(["e0".to_string(), "e1".to_string()]);
    assert_each_once(&lines, expected);
    let crlf = lines
        .iter()
        .find(|l| field(l, "n").as_deref() == Some("e0"))
        .expect("e0");
    assert_eq!(field(crlf, "msg").as_deref(), Some("crlf"));
    let source = field(&lines[0], "source").expect("source");
    assert_eq!(source, log.to_string_lossy());
    agent.stop().await;
    let positions = std::fs::read_to_string(dir.path().join("positions.json")).expect("positions");
    assert!(positions.contains("app.log"), "{positions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_file_neither_skips_nor_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("app.log");
    let receiver = Receiver::start().await;
    let mut config = test_config(dir.path(), &receiver.url());
    config.files = vec![log.to_string_lossy().into_owned()];
    config.batch.max_events = 7;

    // A writer appends steadily while the agent is stopped and started twice.
    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        for chunk in 0..60 {
            append(&writer_log, &numbered("w", chunk * 50..chunk * 50 + 50));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for round in 1..=2 {
        let agent = TestAgent::start(config.clone()).await;
        let target = round * 300;
        wait_for("progress", LIMIT, || {
            receiver.with(|r| r.lines.len()) >= target
        })
        .await;
        agent.stop().await;
    }
    writer.join().expect("writer");
    let agent = TestAgent::start(config.clone()).await;
    wait_for("all 3000 lines", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 3000
    })
    .await;
    agent.stop().await;
    assert_each_once(&receiver.lines(), (0..3000).map(|i| format!("w{i}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_delivers_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = test_config(dir.path(), &format!("http://127.0.0.1:{port}"));
    let agent = TestAgent::start(config).await;

    let payload: String = (0..500).map(|i| format!("level=info n=r{i}\n")).collect();
    send_tcp(&agent, payload.as_bytes()).await;
    wait_for_metric(&agent, "spoor_agent_forward_retries_total", 3.0).await;

    // Up again, but busy for the first few requests.
    let receiver = Receiver::start_on(port).await;
    receiver.fail_next(5);
    wait_for("all 500 lines", LIMIT, || {
        receiver.with(|r| r.lines.len()) >= 500
    })
    .await;
    wait_for_metric(&agent, "spoor_agent_forwarded_events_total", 500.0).await;
    assert_eq!(
        agent.metric("spoor_agent_buffer_unacked_records").await,
        0.0
    );
    agent.stop().await;
    assert_each_once(&receiver.lines(), (0..500).map(|i| format!("r{i}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_batches_are_resent_after_restart_with_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.always(503);
    let config = test_config(dir.path(), &receiver.url());
    let agent = TestAgent::start(config.clone()).await;
    let payload: String = (0..20).map(|i| format!("n=k{i}\n")).collect();
    send_tcp(&agent, payload.as_bytes()).await;
    wait_for_metric(&agent, "spoor_agent_forward_retries_total", 1.0).await;
    agent.stop().await;

    receiver.always(0);
    let agent = TestAgent::start(config).await;
    wait_for("20 lines", LIMIT, || receiver.with(|r| r.lines.len()) >= 20).await;
    agent.stop().await;
    assert_each_once(&receiver.lines(), (0..20).map(|i| format!("k{i}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batch_goes_to_deadletter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.always(400);
    let agent = TestAgent::start(test_config(dir.path(), &receiver.url())).await;
    send_tcp(&agent, b"level=error n=bad1\n").await;
    wait_for_metric(&agent, "spoor_agent_deadlettered_batches_total", 1.0).await;
    let dl = dir.path().join(spoor_agent::DEADLETTER_DIR);
    let files: Vec<_> = std::fs::read_dir(&dl)
        .expect("deadletter dir")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&agent.agent_id()) && name.ends_with(".txt"),
        "{name}"
    );
    let content = std::fs::read_to_string(files[0].path()).expect("read");
    assert!(content.contains("# status: 400"), "{content}");
    assert!(content.contains("rejected by test"), "{content}");
    assert!(content.contains("n=bad1"), "{content}");
    assert_eq!(
        agent.metric("spoor_agent_buffer_unacked_records").await,
        0.0
    );
    agent.stop().await;
}
