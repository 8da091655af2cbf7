use std::time::{Duration, SystemTime};

use spoor_sdk::deadletter::DeadLetter;
use spoor_sdk::task_run::TaskRun;

use crate::support::{capture, dead_letters};

#[test]
fn an_emitted_report_parses_back_to_its_fields() {
    let failed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let run = TaskRun::new("text_analysis", "run-9").with_inline_payload("say \"hi\"\nbye");
    let report = DeadLetter::new(
        &run,
        4,
        "model = unavailable",
        failed,
        failed + Duration::from_secs(3),
    );
    let ((), events) = capture(|| report.emit());
    let letters = dead_letters(&events);
    assert_eq!(letters.len(), 1);
    let line = letters[0];
    let expected = report.to_event();
    for (key, value) in expected.pairs().filter(|(k, _)| *k != "msg") {
        assert_eq!(line.get(key), Some(value), "{key}");
    }
    assert_eq!(line.get("payload"), Some("say \"hi\"\nbye"));
    assert_eq!(
        line.get("last_failed"),
        Some("2027-01-15T08:00:03.000000000Z")
    );
    assert!(line.get("ts").is_some());
}
