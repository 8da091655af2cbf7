//! The SDK's spill directory: the agent forwards spill files with `source=spill` and
//! removes a finished file only once the collector acknowledged all its lines.

use std::time::Duration;

use crate::harness::{Agent, Collector, wait_for};

fn lines(tag: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("level=info spill={tag} i={i} msg=\"spilled {i}\"\n"))
        .collect()
}

#[test]
fn agent_forwards_spill_files_and_removes_them_once_acknowledged() {
    let spill = tempfile::tempdir().expect("temp dir");
    // A writer that is gone: its file is finished, even with a partial last line.
    let dead_pid = {
        let mut c = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    };
    let dead = spill.path().join(format!("spill-{dead_pid}-5-0.log"));
    std::fs::write(
        &dead,
        lines("dead", 300) + "level=warn spill=dead msg=\"cut short\"",
    )
    .expect("write");
    // This process writes two files: the older one is finished, the newer one is live.
    let me = std::process::id();
    let old = spill.path().join(format!("spill-{me}-7-0.log"));
    let live = spill.path().join(format!("spill-{me}-7-1.log"));
    std::fs::write(&old, lines("old", 200)).expect("write");
    std::fs::write(&live, lines("live", 100)).expect("write");
    std::fs::write(spill.path().join("notes.txt"), "not a spill file\n").expect("write");

    let mut collector = Collector::start();
    collector.kill9();
    let agent = Agent::start(
        &collector,
        &["--spill-dir", spill.path().to_str().expect("utf-8")],
    );
    wait_for(
        "the agent to read every spilled line",
        Duration::from_secs(30),
        || {
            (agent.metric("spoor_agent_input_events_total{input=\"spill\"}") == Some(601.0))
                .then_some(())
        },
    );
    wait_for("a failed send", Duration::from_secs(30), || {
        (agent
            .metric("spoor_agent_forward_retries_total")
            .is_some_and(|r| r > 0.0))
        .then_some(())
    });
    // The collector never acknowledged anything: every file is still there.
    assert!(dead.exists() && old.exists() && live.exists());

    collector.restart();
    wait_for(
        "601 spilled lines searchable",
        Duration::from_secs(30),
        || (collector.count("") == 601).then_some(()),
    );
    assert_eq!(collector.count("source:spill"), 601);
    assert_eq!(collector.count("spill:dead"), 301);
    assert_eq!(collector.count("spill:old"), 200);
    assert_eq!(collector.count("spill:live"), 100);
    wait_for("finished files removed", Duration::from_secs(30), || {
        (!dead.exists() && !old.exists()).then_some(())
    });
    assert!(live.exists(), "the file being written must stay");
    assert!(spill.path().join("notes.txt").exists());

    // The writer moves on: the live file becomes finished and goes too; new lines arrive.
    std::fs::write(
        spill.path().join(format!("spill-{me}-7-2.log")),
        lines("next", 10),
    )
    .expect("write");
    wait_for("611 lines searchable", Duration::from_secs(30), || {
        (collector.count("") == 611).then_some(())
    });
    wait_for(
        "the superseded file removed",
        Duration::from_secs(30),
        || (!live.exists()).then_some(()),
    );
    assert_eq!(collector.count("spill:live"), 100);
}
