//! The email pipeline that motivates spoor, in one process: a batch of incoming messages
//! is parsed into text and links; text-analysis and link-analysis tasks run per part,
//! passing IDs (not data) through a key-value store; some attempts fail transiently and are
//! retried with full jitter; one message is malformed, fails permanently and is
//! dead-lettered (and reported as the batch's failed item); a redelivered message is
//! skipped by the idempotency guard.
//!
//! It logs like any task, through the SDK configured from the environment:
//!
//! ```sh
//! SPOOR_AGENT=tcp:127.0.0.1:8741 cargo run -p spoor-sdk --features idempotency --example email_pipeline
//! # without a reachable agent, lines go to the spill file in $SPOOR_SPILL_DIR
//! # (default $TMPDIR/spoor-spill), which the agent picks up later.
//! ```
//!
//! It finishes in well under a second and prints a summary on stdout. The same code runs
//! across hosts by swapping `MemoryStore` for `RedbStore` (feature `redb`) or `RedisStore`
//! (feature `redis`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let guard = match spoor_sdk::init!() {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("email_pipeline: cannot set up logging: {error}");
            return ExitCode::FAILURE;
        }
    };
    let summary = pipeline::run(&pipeline::Options::default());
    println!("{summary}");
    drop(guard); // flushes to the agent (or the spill file)
    ExitCode::SUCCESS
}

/// The tasks and their wiring; `run` is what the example's test calls.
pub mod pipeline {
    use std::collections::HashMap;
    use std::fmt;
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use serde_json::{Value, json};
    use spoor_sdk::batch::process_batch;
    use spoor_sdk::depth::{RecursionGuard, depth_of};
    use spoor_sdk::idempotency::{Idempotency, IdempotencyConfig, IdempotencyError, MemoryStore};
    use spoor_sdk::retry::{ErrorClass, RetryPolicy};
    use spoor_sdk::task::new_task_id;
    use spoor_sdk::task_run::TaskRun;

    /// Knobs of a run.
    #[derive(Debug, Clone)]
    pub struct Options {
        /// The retry policy of every task.
        pub retry: RetryPolicy,
    }

    impl Default for Options {
        fn default() -> Self {
            Options {
                retry: RetryPolicy::new()
                    .with_max_attempts(4)
                    .with_base_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_millis(200))
                    .with_deadline(Duration::from_secs(5)),
            }
        }
    }

    /// What happened, for the summary and the test.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct Summary {
        /// Messages delivered (redeliveries included).
        pub delivered: usize,
        /// Times `parse_email` really ran its work.
        pub parsed: usize,
        /// Deliveries answered from the idempotency store.
        pub replays_skipped: usize,
        /// Texts analysed.
        pub texts_analysed: usize,
        /// Links analysed.
        pub links_analysed: usize,
        /// Attempts that failed transiently and were retried.
        pub transient_failures: usize,
        /// Message IDs the batches reported as failed (dead-lettered).
        pub failed_items: Vec<String>,
    }

    impl fmt::Display for Summary {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "delivered={} parsed={} replays_skipped={} texts_analysed={} links_analysed={} \
                 transient_failures={} failed_items={}",
                self.delivered,
                self.parsed,
                self.replays_skipped,
                self.texts_analysed,
                self.links_analysed,
                self.transient_failures,
                self.failed_items.join(",")
            )
        }
    }

    /// Why a task failed.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum TaskError {
        /// Worth retrying (a timeout, a 503).
        #[error("transient: {0}")]
        Transient(String),
        /// Will fail again (malformed input, missing data).
        #[error("permanent: {0}")]
        Permanent(String),
    }

    fn classify(error: &TaskError) -> ErrorClass {
        match error {
            TaskError::Transient(_) => ErrorClass::Retryable,
            TaskError::Permanent(_) => ErrorClass::Permanent,
        }
    }

    /// Stands in for the key-value store tasks share (S3, Redis, DynamoDB): tasks pass
    /// each other keys into it.
    #[derive(Debug, Default)]
    struct Kv(Mutex<HashMap<String, String>>);

    impl Kv {
        fn put(&self, key: &str, value: &str) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.into(), value.into());
        }

        fn get(&self, key: &str) -> Result<String, TaskError> {
            let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            map.get(key)
                .cloned()
                .ok_or_else(|| TaskError::Permanent(format!("no `{key}` in the store")))
        }
    }

    /// The shared state of one pipeline run.
    struct Pipeline {
        options: Options,
        kv: Kv,
        idempotency: Idempotency<MemoryStore>,
        depth: RecursionGuard,
        /// Attempts per link and per text so far, to make some fail transiently.
        attempts: Mutex<HashMap<String, u32>>,
        summary: Mutex<Summary>,
    }

    const INBOX: [(&str, &str); 4] = [
        (
            "msg-1",
            "Subject: launch\n\nThe launch notes are at https://docs.example.com/launch and \
             the status page at https://flaky.example.net/status .",
        ),
        (
            "msg-2",
            "Subject: lunch\n\nPizza on Friday? Menu: https://pizza.example.org/menu",
        ),
        ("msg-3", "this message has no header and no body"),
        (
            "msg-4",
            "Subject: numbers\n\nQ3 went well; details in the all-hands.",
        ),
    ];

    /// Runs two batches: the inbox, then a redelivery of `msg-1` and `msg-2`.
    pub fn run(options: &Options) -> Summary {
        let pipeline = Pipeline {
            options: options.clone(),
            kv: Kv::default(),
            idempotency: Idempotency::new(
                MemoryStore::new(),
                IdempotencyConfig::default().with_key_parts(["/message_id"]),
            ),
            depth: RecursionGuard::default(),
            attempts: Mutex::new(HashMap::new()),
            summary: Mutex::new(Summary::default()),
        };
        for (id, raw) in INBOX {
            pipeline.kv.put(&format!("raw/{id}"), raw);
        }
        let first: Vec<&str> = INBOX.iter().map(|(id, _)| *id).collect();
        pipeline.receive_batch(&first);
        pipeline.receive_batch(&["msg-1", "msg-2"]);
        pipeline
            .summary
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    impl Pipeline {
        fn summary(&self) -> std::sync::MutexGuard<'_, Summary> {
            self.summary.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// A queue trigger's handler: one batch of message IDs in, failed IDs out.
        fn receive_batch(&self, message_ids: &[&str]) {
            let batch_id = new_task_id();
            let _scope = spoor_sdk::task("receive_email", &batch_id, 1, 0);
            tracing::info!(messages = message_ids.len(), "Batch received.");
            self.summary().delivered += message_ids.len();
            let report = process_batch(
                &self.options.retry,
                &TaskRun::new("receive_email", &batch_id),
                message_ids,
                |id| id.to_string(),
                classify,
                |id, attempt| self.parse_email(&json!({ "message_id": id, "depth": 0 }), attempt),
            );
            tracing::info!(response = %report.to_response(), "Batch done.");
            self.summary().failed_items.extend(report.into_failed());
        }

        /// Task `parse_email`: splits a message into text and links, stores them, and
        /// starts one analysis task per part. Guarded: a redelivered message is not parsed
        /// (nor analysed) twice.
        fn parse_email(&self, payload: &Value, attempt: u32) -> Result<(), TaskError> {
            let message_id = payload["message_id"].as_str().unwrap_or_default();
            let _scope = spoor_sdk::task("parse_email", message_id, attempt, depth_of(payload));
            let mut ran = false;
            let outcome = self.idempotency.run("parse_email", payload, || {
                ran = true;
                self.summary().parsed += 1;
                let raw = self.kv.get(&format!("raw/{message_id}"))?;
                let (_, body) = raw.split_once("\n\n").ok_or_else(|| {
                    TaskError::Permanent(format!(
                        "{message_id}: no blank line between header and body"
                    ))
                })?;
                let text_id = format!("text/{message_id}");
                self.kv.put(&text_id, body);
                let mut link_ids = Vec::new();
                for (n, link) in body
                    .split_whitespace()
                    .filter(|w| w.starts_with("https://"))
                    .enumerate()
                {
                    let link_id = format!("link/{message_id}/{n}");
                    self.kv.put(&link_id, link);
                    link_ids.push(link_id);
                }
                tracing::info!(message_id, links = link_ids.len(), "Parsed.");

                let parent = TaskRun::new("parse_email", message_id).with_depth(depth_of(payload));
                self.start("text_analysis", &parent, &text_id)?;
                for link_id in &link_ids {
                    self.start("link_analysis", &parent, link_id)?;
                }
                Ok(json!({ "text_id": text_id, "link_ids": link_ids }))
            });
            match outcome {
                Ok(parts) => {
                    if !ran {
                        self.summary().replays_skipped += 1;
                    }
                    tracing::debug!(%parts, "Message handled.");
                    Ok(())
                }
                Err(IdempotencyError::Work(error)) => Err(error),
                Err(IdempotencyError::AlreadyInProgress { key }) => Err(TaskError::Transient(
                    format!("{key} is being parsed elsewhere"),
                )),
                Err(other) => Err(TaskError::Permanent(other.to_string())),
            }
        }

        /// Starts a child task with a payload of IDs and `depth + 1` (here: runs it in
        /// place, under its own task scope and the retry policy).
        fn start(&self, child: &str, parent: &TaskRun, part_id: &str) -> Result<(), TaskError> {
            let mut fields = serde_json::Map::new();
            fields.insert("part_id".into(), part_id.into());
            let payload = self
                .depth
                .child_payload(parent, child, fields)
                .map_err(|e| TaskError::Permanent(e.to_string()))?;
            let run = TaskRun::new(child, new_task_id())
                .with_depth(depth_of(&payload))
                .with_payload_ref(part_id);
            let _scope = spoor_sdk::task(run.task(), run.task_id(), 1, run.depth());
            let result = self
                .options
                .retry
                .run(&run, classify, |attempt| match child {
                    "text_analysis" => self.text_analysis(part_id, attempt),
                    _ => self.link_analysis(part_id, attempt),
                });
            // A child that gave up was dead-lettered by the retry loop; the parent goes on.
            if let Err(error) = result {
                tracing::warn!(child, part_id, error = %error, "Child task gave up.");
            }
            Ok(())
        }

        fn count_attempt(&self, part_id: &str) -> u32 {
            let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
            let n = attempts.entry(part_id.to_string()).or_insert(0);
            *n += 1;
            *n
        }

        fn transient(&self, what: String) -> Result<(), TaskError> {
            self.summary().transient_failures += 1;
            Err(TaskError::Transient(what))
        }

        /// Task `text_analysis`: counts words. The analysis service times out on the first
        /// try for `msg-2`.
        fn text_analysis(&self, text_id: &str, _attempt: u32) -> Result<(), TaskError> {
            let text = self.kv.get(text_id)?;
            if text_id == "text/msg-2" && self.count_attempt(text_id) == 1 {
                return self.transient("analysis service timed out".into());
            }
            tracing::info!(
                text_id,
                words = text.split_whitespace().count(),
                "Text analysed."
            );
            self.summary().texts_analysed += 1;
            Ok(())
        }

        /// Task `link_analysis`: "fetches" a link. `flaky.example.net` answers 503 twice.
        fn link_analysis(&self, link_id: &str, _attempt: u32) -> Result<(), TaskError> {
            let link = self.kv.get(link_id)?;
            if link.contains("flaky.example.net") && self.count_attempt(link_id) <= 2 {
                return self.transient(format!("GET {link}: 503 Service Unavailable"));
            }
            tracing::info!(link_id, link = link.as_str(), "Link analysed.");
            self.summary().links_analysed += 1;
            Ok(())
        }
    }
}
