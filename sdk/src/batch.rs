//! Partial batch failures: process a batch of queue items one by one and report only the
//! ones that failed, so the queue redelivers those and not the whole batch.
//!
//! Each item runs under the retry policy ([`crate::retry`]) inside a span with its
//! `item_id`; an item that fails for good is dead-lettered with `payload_ref` set to its ID
//! (the retry loop emits the report) and its ID is returned in [`BatchReport::failed`].
//! With the `json` feature, [`BatchReport::to_response`] gives the
//! `{"batchItemFailures": [{"itemIdentifier": ...}]}` shape that queue triggers (AWS
//! Lambda's SQS, Kinesis and DynamoDB event sources) expect.
//!
//! ```
//! use spoor_sdk::batch::process_batch;
//! use spoor_sdk::retry::{ErrorClass, RetryPolicy};
//! use spoor_sdk::task_run::TaskRun;
//!
//! let items = vec![("m1", 4), ("m2", -1), ("m3", 9)];
//! let report = process_batch(
//!     &RetryPolicy::new().with_max_attempts(1),
//!     &TaskRun::new("score", "batch-1"),
//!     &items,
//!     |item| item.0.to_string(),
//!     |_: &String| ErrorClass::Permanent,
//!     |item, _attempt| if item.1 < 0 { Err(format!("negative score {}", item.1)) } else { Ok(()) },
//! );
//! assert_eq!(report.failed(), ["m2"]);
//! assert_eq!(report.succeeded(), 2);
//! ```

use std::fmt;

use crate::retry::{ErrorClass, RetryPolicy};
use crate::task_run::TaskRun;

/// What became of a batch: how many items succeeded and the IDs of those that failed, in
/// batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport<Id> {
    succeeded: usize,
    failed: Vec<Id>,
}

impl<Id> BatchReport<Id> {
    /// The IDs of the items that failed for good, in batch order.
    pub fn failed(&self) -> &[Id] {
        &self.failed
    }

    /// The IDs of the items that failed, by value.
    pub fn into_failed(self) -> Vec<Id> {
        self.failed
    }

    /// How many items succeeded.
    pub fn succeeded(&self) -> usize {
        self.succeeded
    }

    /// Whether every item succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.failed.is_empty()
    }

    /// The partial-batch response queue triggers expect:
    /// `{"batchItemFailures": [{"itemIdentifier": "<id>"}, ...]}`.
    #[cfg(feature = "json")]
    pub fn to_response(&self) -> serde_json::Value
    where
        Id: fmt::Display,
    {
        let failures: Vec<serde_json::Value> = self
            .failed
            .iter()
            .map(|id| serde_json::json!({ "itemIdentifier": id.to_string() }))
            .collect();
        serde_json::json!({ "batchItemFailures": failures })
    }
}

/// Processes `items` one by one with `work`, retrying each under `policy`, and returns
/// which failed.
///
/// `item_id` names an item (its queue message ID); `classify` tells retryable errors from
/// permanent ones; `work` gets the item and the attempt number (from 1). Items that fail
/// for good are dead-lettered as runs of `batch`'s task and run ID with `payload_ref` set to
/// the item's ID.
pub fn process_batch<I, Id, E, C, F>(
    policy: &RetryPolicy,
    batch: &TaskRun,
    items: impl IntoIterator<Item = I>,
    item_id: impl Fn(&I) -> Id,
    classify: C,
    mut work: F,
) -> BatchReport<Id>
where
    Id: fmt::Display,
    E: fmt::Display,
    C: Fn(&E) -> ErrorClass,
    F: FnMut(&I, u32) -> Result<(), E>,
{
    let mut report = BatchReport {
        succeeded: 0,
        failed: Vec::new(),
    };
    for item in items {
        let id = item_id(&item);
        let run = TaskRun::new(batch.task(), batch.task_id())
            .with_depth(batch.depth())
            .with_payload_ref(id.to_string());
        let span = tracing::info_span!("batch_item", item_id = %id);
        let outcome = span.in_scope(|| policy.run(&run, &classify, |attempt| work(&item, attempt)));
        match outcome {
            Ok(()) => report.succeeded += 1,
            Err(_) => report.failed.push(id),
        }
    }
    if !report.failed.is_empty() {
        tracing::warn!(
            succeeded = report.succeeded,
            failed = report.failed.len(),
            "Batch finished with failed items."
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn transient_failures_are_retried_and_only_lasting_failures_reported() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let policy = RetryPolicy::new().with_max_attempts(3).with_clock(clock);
        let mut tries = std::collections::HashMap::new();
        let report = process_batch(
            &policy,
            &TaskRun::new("t", "b1"),
            ["ok", "flaky", "broken", "bad", "ok2"],
            |item| item.to_string(),
            |e: &&str| {
                if *e == "invalid" {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Retryable
                }
            },
            |item, attempt| {
                *tries.entry(*item).or_insert(0) += 1;
                match *item {
                    "flaky" if attempt < 3 => Err("timeout"),
                    "broken" => Err("timeout"),
                    "bad" => Err("invalid"),
                    _ => Ok(()),
                }
            },
        );
        assert_eq!(report.failed(), ["broken", "bad"]);
        assert_eq!(report.succeeded(), 3);
        assert_eq!(tries["flaky"], 3);
        assert_eq!(tries["broken"], 3);
        assert_eq!(tries["bad"], 1);
        assert_eq!(tries["ok"], 1);
    }

    #[cfg(feature = "json")]
    #[test]
    fn response_has_the_queue_trigger_shape() {
        let report = BatchReport {
            succeeded: 1,
            failed: vec!["a", "b"],
        };
        assert_eq!(
            report.to_response(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]})
        );
        let empty: BatchReport<&str> = BatchReport {
            succeeded: 2,
            failed: vec![],
        };
        assert_eq!(
            empty.to_response(),
            serde_json::json!({"batchItemFailures": []})
        );
    }
}
