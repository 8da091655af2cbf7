//! The email pipeline example, run through its own `run` with the SDK layer installed.

#[allow(dead_code)] // the example's `main` is not called here
#[path = "../../examples/email_pipeline.rs"]
mod email_pipeline;

use email_pipeline::pipeline::{Options, Summary, run};

use crate::support::{capture, dead_letters};

#[test]
fn the_email_pipeline_retries_dead_letters_and_skips_the_replay() {
    let (summary, events) = capture(|| run(&Options::default()));
    assert_eq!(
        summary,
        Summary {
            delivered: 6,
            // msg-1, msg-2, msg-4 once each, msg-3 once (it fails permanently); the
            // redelivered msg-1 and msg-2 are not parsed again.
            parsed: 4,
            replays_skipped: 2,
            texts_analysed: 3,
            links_analysed: 3,
            // Two 503s from flaky.example.net, one time-out of the text analysis.
            transient_failures: 3,
            failed_items: vec!["msg-3".to_string()],
        }
    );

    // The malformed message is dead-lettered by reference, once.
    let letters = dead_letters(&events);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].get("task"), Some("receive_email"));
    assert_eq!(letters[0].get("payload_ref"), Some("msg-3"));
    assert_eq!(letters[0].get("attempts"), Some("1"));
    assert!(
        letters[0]
            .get("error")
            .is_some_and(|e| e.contains("no blank line"))
    );

    // The flaky link succeeded on its third attempt, in a child task one level deep.
    let flaky = events
        .iter()
        .find(|e| {
            e.get("msg") == Some("Link analysed.")
                && e.get("link").is_some_and(|l| l.contains("flaky"))
        })
        .expect("the flaky link was analysed");
    assert_eq!(flaky.get("attempt"), Some("3"));
    assert_eq!(flaky.get("task"), Some("link_analysis"));
    assert_eq!(flaky.get("depth"), Some("1"));

    // The redelivered messages were answered from the idempotency store.
    let skipped = events
        .iter()
        .filter(|e| e.get("msg") == Some("Already done; returning the stored result."))
        .count();
    assert_eq!(skipped, 2);
}
