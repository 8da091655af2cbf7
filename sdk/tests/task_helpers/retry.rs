use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spoor_sdk::clock::ManualClock;
use spoor_sdk::retry::{ErrorClass, RetryError, RetryPolicy};
use spoor_sdk::task_run::TaskRun;

use crate::support::{capture, dead_letters};

fn policy() -> (Arc<ManualClock>, RetryPolicy) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let policy = RetryPolicy::new()
        .with_max_attempts(3)
        .with_clock(clock.clone());
    (clock, policy)
}

#[test]
fn each_attempt_logs_with_its_number_and_exhaustion_is_dead_lettered() {
    let (_clock, policy) = policy();
    let run = TaskRun::new("link_analysis", "run-1").with_payload_ref("link/msg-1/0");
    let (result, events) = capture(|| {
        let _task = spoor_sdk::task("link_analysis", "run-1", 1, 2);
        policy.run(
            &run,
            |_: &String| ErrorClass::Retryable,
            |attempt| {
                tracing::info!(url = "https://flaky.example.net", "Fetching.");
                Err::<(), _>(format!("503 on try {attempt}"))
            },
        )
    });
    assert!(matches!(
        result,
        Err(RetryError::Exhausted { attempts: 3, .. })
    ));

    let fetches: Vec<_> = events
        .iter()
        .filter(|e| e.get("msg") == Some("Fetching."))
        .collect();
    let numbers: Vec<_> = fetches.iter().map(|e| e.get("attempt")).collect();
    assert_eq!(numbers, [Some("1"), Some("2"), Some("3")]);
    assert!(
        fetches
            .iter()
            .all(|e| e.get("task_id") == Some("run-1") && e.get("depth") == Some("2"))
    );

    let failures: Vec<_> = events
        .iter()
        .filter(|e| e.get("level") == Some("warn"))
        .collect();
    assert_eq!(failures.len(), 3);
    for (n, failure) in failures.iter().enumerate() {
        let attempt = (n + 1).to_string();
        assert_eq!(failure.get("attempt"), Some(attempt.as_str()));
        assert_eq!(
            failure.get("error"),
            Some(format!("503 on try {attempt}").as_str())
        );
    }

    let letters = dead_letters(&events);
    assert_eq!(letters.len(), 1, "{events:?}");
    let letter = letters[0];
    assert_eq!(letter.get("level"), Some("error"));
    assert_eq!(letter.get("task"), Some("link_analysis"));
    assert_eq!(letter.get("task_id"), Some("run-1"));
    assert_eq!(letter.get("attempts"), Some("3"));
    assert_eq!(letter.get("error"), Some("503 on try 3"));
    assert_eq!(letter.get("payload_ref"), Some("link/msg-1/0"));
    assert_eq!(
        letter.get("first_failed"),
        Some("2027-01-15T08:00:00.000000000Z")
    );
    let last = letter.get("last_failed").expect("last_failed");
    // Two sleeps on the manual clock, within 100 ms + 200 ms of the first failure.
    assert!(
        ("2027-01-15T08:00:00.000000000Z".."2027-01-15T08:00:00.300000001Z").contains(&last),
        "{last}"
    );
}

#[test]
fn a_permanent_error_is_dead_lettered_after_one_attempt_with_its_payload_inline() {
    let (_clock, policy) = policy();
    let run = TaskRun::new("charge", "run-2").with_inline_payload(vec![0xde, 0xad, 0xbe, 0xef]);
    let (result, events) = capture(|| {
        policy.run(
            &run,
            |_: &&str| ErrorClass::Permanent,
            |_| Err::<(), _>("card declined"),
        )
    });
    assert!(matches!(
        result,
        Err(RetryError::Permanent {
            attempts: 1,
            error: "card declined"
        })
    ));
    let letters = dead_letters(&events);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].get("attempts"), Some("1"));
    assert_eq!(letters[0].get("payload"), Some("3q2+7w=="));
    assert_eq!(letters[0].get("payload_encoding"), Some("base64"));
    assert_eq!(letters[0].get("payload_ref"), None);
}

#[test]
fn success_emits_no_dead_letter() {
    let (_clock, policy) = policy();
    let (result, events) = capture(|| {
        policy.run(
            &TaskRun::new("t", "r"),
            |_: &&str| ErrorClass::Retryable,
            |attempt| {
                if attempt == 1 {
                    Err("flaky")
                } else {
                    Ok("done")
                }
            },
        )
    });
    assert_eq!(result.ok(), Some("done"));
    assert!(dead_letters(&events).is_empty());
}
