//! Buffer keys at start: a segment sealed with a key that is not configured is moved to
//! quarantine (logged, counted) while the agent runs on and delivers everything else; once
//! the key is listed again the quarantined batches are delivered.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Agent, Collector, wait_for};

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn wait_metric(agent: &Agent, name: &str, value: f64) {
    wait_for(
        &format!("{name} = {value}"),
        Duration::from_secs(30),
        || (agent.metric(name) == Some(value)).then_some(()),
    );
}

fn quarantined_files(agent: &Agent) -> Vec<PathBuf> {
    std::fs::read_dir(agent.data_dir().join("buffer/quarantine"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_segment_under_an_unknown_key_is_quarantined_and_delivered_once_its_key_is_listed() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_a = key_file(keys.path(), "a.key", 0xaa);
    let key_b = key_file(keys.path(), "b.key", 0xbb);
    let (a, b) = (
        key_a.to_str().expect("UTF-8"),
        key_b.to_str().expect("UTF-8"),
    );

    // Key A, collector down: the line waits in the buffer, sealed with A.
    let mut collector = Collector::start();
    collector.stop();
    let mut agent = Agent::start(&collector, &["--buffer-key-file", a]);
    agent.send_tcp(b"msg=\"sealed under key a qone\"\n");
    wait_metric(&agent, "spoor_agent_batches_appended_total", 1.0);
    agent.stop();

    // Only key B, collector up: the agent runs, new lines arrive, the old segment is
    // quarantined and reported.
    collector.restart();
    agent.restart_with(&["--buffer-key-file", b]);
    agent.send_tcp(b"msg=\"sealed under key b qtwo\"\n");
    wait_for("the new line", Duration::from_secs(30), || {
        (collector.count("qtwo") == 1).then_some(())
    });
    assert_eq!(collector.count("qone"), 0);
    assert_eq!(
        agent.metric("spoor_agent_buffer_quarantined_segments"),
        Some(1.0)
    );
    assert_eq!(
        agent.metric("spoor_agent_buffer_quarantined_records"),
        Some(1.0)
    );
    let files = quarantined_files(&agent);
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "buf")),
        "{files:?}"
    );
    let log = agent.log();
    assert!(
        log.contains("moved to quarantine") && log.contains("segment-"),
        "{log}"
    );

    // Keys B and A listed: the quarantined batch is delivered and the quarantine empties.
    agent.restart_with(&["--buffer-key-file", b, "--buffer-old-key-file", a]);
    wait_for("the quarantined line", Duration::from_secs(30), || {
        (collector.count("qone") == 1).then_some(())
    });
    assert_eq!(
        agent.metric("spoor_agent_buffer_restored_records_total"),
        Some(1.0)
    );
    assert_eq!(
        agent.metric("spoor_agent_buffer_quarantined_segments"),
        Some(0.0)
    );
    assert!(quarantined_files(&agent).is_empty());
    assert_eq!(collector.count("qtwo"), 1, "nothing sent twice");
}
