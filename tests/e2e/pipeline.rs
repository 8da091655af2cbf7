//! The whole path: lines sent to the real agent are found by searching the real collector.

use std::time::Duration;

use crate::harness::{Agent, Collector, corpus_dir, wait_for};

#[test]
fn lines_sent_to_the_agent_are_found_by_search() {
    let collector = Collector::start();
    let agent = Agent::start(&collector, &[]);
    let corpus = std::fs::read(corpus_dir().join("OpenSSH_2k.log")).expect("corpus");
    agent.send_tcp(&corpus);
    {
        use std::io::Write;
        let mut s =
            std::os::unix::net::UnixStream::connect(agent.socket_path()).expect("unix socket");
        s.write_all(b"level=error msg=\"charge failed\" task=charge task_id=t-1\n")
            .expect("send");
    }
    wait_for("2001 lines searchable", Duration::from_secs(30), || {
        (collector.count("") == 2001).then_some(())
    });
    assert_eq!(collector.count("source:tcp"), 2000);
    assert_eq!(collector.count("source:unix level:error task:charge"), 1);
    assert_eq!(
        collector.count("\"Failed password\""),
        corpus_count(&corpus, "Failed password")
    );
    let (_, body) = collector.get("/api/v1/search", &[("q", "task_id:t-1")]);
    let hit = &body["hits"][0];
    assert!(
        hit["agent"].as_str().is_some_and(|a| !a.is_empty()),
        "{hit}"
    );
    assert!(hit["host"].as_str().is_some_and(|h| !h.is_empty()), "{hit}");
}

fn corpus_count(corpus: &[u8], phrase: &str) -> u64 {
    String::from_utf8_lossy(corpus)
        .lines()
        .filter(|l| l.contains(phrase))
        .count() as u64
}

#[test]
fn agent_killed_and_collector_down_loses_nothing_it_read() {
    let mut collector = Collector::start();
    let mut agent = Agent::start(&collector, &[]);
    let mut sent = 0u64;
    for round in 0..10u64 {
        let lines: String = (0..500)
            .map(|i| format!("level=info round={round} i={i} msg=\"line {i}\"\n"))
            .collect();
        agent.send_tcp(lines.as_bytes());
        sent += 500;
        // The agent has read them once its metrics count them; then it may die.
        wait_for(
            "the agent to read the lines",
            Duration::from_secs(30),
            || {
                let text = reqwest::blocking::get(format!(
                    "http://127.0.0.1:{}/metrics",
                    agent.admin_port
                ))
                .ok()?
                .text()
                .ok()?;
                let read: u64 = text
                    .lines()
                    .filter(|l| l.starts_with("spoor_agent_input_events_total{input=\"tcp\"}"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum();
                (read >= 500).then_some(())
            },
        );
        // Once the batch is written to the buffer's file, a kill -9 cannot lose it (the page
        // cache outlives the process); then kill.
        wait_for("the batch in the buffer", Duration::from_secs(30), || {
            (agent.metric("spoor_agent_batches_appended_total")? >= 1.0).then_some(())
        });
        if round == 4 {
            collector.kill9();
        }
        agent.restart();
        if round == 6 {
            collector.restart();
        }
    }
    wait_for("every line searchable", Duration::from_secs(60), || {
        (collector.count("") == sent).then_some(())
    });
    for round in 0..10 {
        assert_eq!(
            collector.count(&format!("round:{round}")),
            500,
            "round {round}"
        );
    }
}
