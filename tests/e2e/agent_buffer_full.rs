//! The full-buffer policies through the running agent: a small buffer, the collector down,
//! more lines than fit. `block` stalls the inputs and loses nothing; `drop_newest` and
//! `drop_oldest` drop, count the drops, and report them in one event once there is room.

use std::time::Duration;

use crate::harness::{Agent, Collector, wait_for};

const LINES: u64 = 30_000;

fn lines() -> Vec<u8> {
    (0..LINES)
        .map(|i| {
            format!(
                "level=info n={i} msg=\"pressure line {i} with some padding to make it longer\"\n"
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// A collector that is down, and an agent with a 256 KiB buffer and `policy`.
fn setup(policy: &str) -> (Collector, Agent, tempfile::TempDir) {
    let conf_dir = tempfile::tempdir().expect("temp dir");
    let conf = conf_dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "max_line_bytes = 1024\n[batch]\nmax_bytes = 16384\nmax_wait = \"50ms\"\n\
             [buffer]\nmax_bytes = 262144\nmax_segment_bytes = 65536\nwhen_full = \"{policy}\"\n\
             [forward]\nbackoff_cap = \"500ms\"\n"
        ),
    )
    .expect("write config");
    let mut collector = Collector::start();
    collector.kill9();
    let agent = Agent::start(&collector, &["--config", conf.to_str().expect("utf-8")]);
    (collector, agent, conf_dir)
}

fn send_in_background(agent: &Agent) -> std::thread::JoinHandle<()> {
    let port = agent.tcp_port;
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::io::Write::write_all(&mut s, &lines()).expect("send");
    })
}

fn metric(agent: &Agent, name: &str) -> f64 {
    agent.metric(name).unwrap_or(0.0)
}

#[test]
fn agent_buffer_full_block_stalls_inputs_and_loses_nothing() {
    let (mut collector, agent, _conf) = setup("block");
    let sender = send_in_background(&agent);
    wait_for("the buffer to fill", Duration::from_secs(30), || {
        (metric(&agent, "spoor_agent_buffer_full_total") > 0.0).then_some(())
    });
    // The agent holds at most the buffer, the channel and one batch: it stopped reading.
    let read = metric(&agent, "spoor_agent_input_events_total{input=\"tcp\"}");
    assert!(
        read < LINES as f64,
        "read {read} of {LINES} lines while blocked"
    );
    collector.restart();
    sender.join().expect("sender");
    wait_for(
        "every line at the collector",
        Duration::from_secs(60),
        || (collector.count("source:tcp") == LINES).then_some(()),
    );
    assert_eq!(metric(&agent, "spoor_agent_dropped_events_total"), 0.0);
    assert_eq!(collector.count("\"dropped events\""), 0);
    assert_eq!(collector.count("n:[0 TO 29999]"), LINES);
}

#[test]
fn agent_buffer_full_drop_newest_counts_and_reports_drops() {
    let (mut collector, agent, _conf) = setup("drop_newest");
    send_in_background(&agent).join().expect("sender");
    wait_for("every line read", Duration::from_secs(30), || {
        (metric(&agent, "spoor_agent_input_events_total{input=\"tcp\"}") == LINES as f64)
            .then_some(())
    });
    wait_for("drops counted", Duration::from_secs(30), || {
        let dropped = metric(&agent, "spoor_agent_dropped_events_total");
        let buffered = metric(&agent, "spoor_agent_batches_appended_total");
        (dropped > 0.0 && buffered > 0.0).then_some(())
    });
    collector.restart();
    wait_for("the buffer to drain", Duration::from_secs(60), || {
        (agent.metric("spoor_agent_buffer_unacked_records") == Some(0.0)).then_some(())
    });
    // Under load the buffer can fill again after a report, so there may be more than one
    // pressure period; every drop must be in exactly one report.
    let reported = wait_for("every drop reported", Duration::from_secs(30), || {
        let (_, body) = collector.get(
            "/api/v1/search",
            &[("q", "\"spoor agent dropped events\""), ("limit", "100")],
        );
        let sum: u64 = body["hits"]
            .as_array()?
            .iter()
            .filter_map(|h| h["dropped_events"].as_str()?.parse::<u64>().ok())
            .sum();
        (sum > 0 && sum as f64 == metric(&agent, "spoor_agent_dropped_events_total")).then_some(sum)
    });
    wait_for("the buffer to drain", Duration::from_secs(30), || {
        (agent.metric("spoor_agent_buffer_unacked_records") == Some(0.0)).then_some(())
    });
    // Everything not dropped arrived, and the oldest line was kept (drop_newest).
    let arrived = collector.count("source:tcp");
    assert_eq!(arrived + reported, LINES);
    assert_eq!(collector.count("n:0"), 1);
}

#[test]
fn agent_buffer_full_drop_oldest_keeps_the_newest_and_reports_drops() {
    let (mut collector, agent, _conf) = setup("drop_oldest");
    send_in_background(&agent).join().expect("sender");
    wait_for(
        "every line read and buffered",
        Duration::from_secs(30),
        || {
            let read =
                metric(&agent, "spoor_agent_input_events_total{input=\"tcp\"}") == LINES as f64;
            (read && metric(&agent, "spoor_agent_buffer_dropped_records_total") > 0.0).then_some(())
        },
    );
    collector.restart();
    wait_for("the newest line", Duration::from_secs(30), || {
        (collector.count(&format!("n:{}", LINES - 1)) == 1).then_some(())
    });
    wait_for("the buffer to drain", Duration::from_secs(60), || {
        (agent.metric("spoor_agent_buffer_unacked_records") == Some(0.0)).then_some(())
    });
    // Every dropped batch is in exactly one report (under load there may be more than one
    // pressure period, each with its own report).
    wait_for("every drop reported", Duration::from_secs(30), || {
        let (_, body) = collector.get(
            "/api/v1/search",
            &[("q", "\"spoor agent dropped events\""), ("limit", "100")],
        );
        let sum: f64 = body["hits"]
            .as_array()?
            .iter()
            .filter_map(|h| h["dropped_batches"].as_str()?.parse::<f64>().ok())
            .sum();
        (sum > 0.0 && sum == metric(&agent, "spoor_agent_buffer_dropped_records_total"))
            .then_some(())
    });
    assert!(collector.count("source:tcp") < LINES);
    // The oldest lines went (batches already in flight when their segment was dropped
    // may still arrive: the request holds its own copy).
    assert!(
        collector.count("n:[0 TO 9999]") < 10_000,
        "the oldest lines were dropped"
    );
}
