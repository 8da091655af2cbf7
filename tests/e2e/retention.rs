//! Retention by age: old audit segments and their index documents go together, and the
//! audit log still verifies.

use std::time::Duration;

use crate::harness::{Collector, read_tree, run_cli, wait_for};

#[test]
fn old_lines_leave_the_audit_log_and_the_index_together() {
    let mut c = Collector::start_with_config(
        "[audit]\nsegment_bytes = 4096\nretention = \"3s\"\nretention_check = \"200ms\"\n",
    );
    let batch = |marker: &str, b: usize| -> String {
        (0..20).map(|i| format!("level=info marker={marker} b={b} i={i} msg=\"padding padding padding padding\"\n")).collect()
    };
    for b in 0..10 {
        assert_eq!(
            c.ingest(batch("old", b).as_bytes(), Some(&format!("old-{b}")))
                .0,
            200
        );
    }
    c.wait_indexed(200);
    // Retention is by age: let the old lines become older than 3 s.
    std::thread::sleep(Duration::from_secs(4));
    for b in 0..10 {
        assert_eq!(
            c.ingest(batch("new", b).as_bytes(), Some(&format!("new-{b}")))
                .0,
            200
        );
    }
    wait_for(
        "old lines to leave the index",
        Duration::from_secs(30),
        || (c.count("marker:old") < 200).then_some(()),
    );
    wait_for("new lines searchable", Duration::from_secs(30), || {
        (c.count("marker:new") == 200).then_some(())
    });
    c.wait_caught_up();
    assert!(c.count("marker:old") < 200);
    assert_eq!(c.count("marker:new"), 200, "new lines stay");
    c.stop();
    let segments = read_tree(&c.data_dir().join("audit/segments"));
    assert!(
        segments
            .iter()
            .all(|(p, _)| !p.to_string_lossy().ends_with("00000000000000000000.seg")),
        "the first segment is gone"
    );
    let (code, out, err) = run_cli(
        &[
            "audit",
            "verify",
            "--data-dir",
            &c.data_dir().to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(code, 0, "verify passes after retention:\n{out}\n{err}");
}
