use std::sync::Arc;
use std::time::SystemTime;

use spoor_sdk::batch::process_batch;
use spoor_sdk::clock::ManualClock;
use spoor_sdk::retry::{ErrorClass, RetryPolicy};
use spoor_sdk::task_run::TaskRun;

use crate::support::{capture, dead_letters};

#[test]
fn failed_items_are_returned_and_each_is_dead_lettered() {
    let policy = RetryPolicy::new()
        .with_max_attempts(2)
        .with_clock(Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH)));
    let items = [("a", 1), ("b", -1), ("c", 2), ("d", 0)];
    let (report, events) = capture(|| {
        process_batch(
            &policy,
            &TaskRun::new("score", "batch-7"),
            items,
            |item| item.0.to_string(),
            |e: &String| {
                if e.starts_with("negative") {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Retryable
                }
            },
            |item, _| match item.1 {
                n if n < 0 => Err(format!("negative score {n}")),
                0 => Err("scorer unavailable".to_string()),
                _ => Ok(()),
            },
        )
    });
    assert_eq!(report.failed(), ["b", "d"]);
    assert_eq!(report.succeeded(), 2);

    let letters = dead_letters(&events);
    let refs: Vec<_> = letters
        .iter()
        .map(|e| (e.get("payload_ref"), e.get("attempts")))
        .collect();
    assert_eq!(refs, [(Some("b"), Some("1")), (Some("d"), Some("2"))]);
    assert!(
        letters
            .iter()
            .all(|e| e.get("task") == Some("score") && e.get("task_id") == Some("batch-7"))
    );
    // Lines logged while working on an item name it.
    let item_lines: Vec<_> = events.iter().filter_map(|e| e.get("item_id")).collect();
    assert!(item_lines.contains(&"d"), "{events:?}");
}
