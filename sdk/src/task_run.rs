//! [`TaskRun`]: one run of a task as the retry, dead-letter, recursion-guard and batch
//! helpers name it (`task`, `task_id`, `depth`, and what to replay it with).
//!
//! A run's `task_id` stays the same across its retries; each attempt is numbered by the
//! retry loop. The payload is preferably a reference (an ID in a store the task can reach)
//! rather than the data itself.

/// What a dead-letter report points the replay at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// An ID of the payload in a store the task can read (preferred: pass IDs, not data).
    Ref(String),
    /// The payload itself; reported inline, size-capped, base64 when not UTF-8.
    Inline(Vec<u8>),
}

/// One run of a task: its name, its run ID (stable across retries), how deep in a chain of
/// tasks it is, and the payload to replay it with.
///
/// ```
/// use spoor_sdk::task_run::{Payload, TaskRun};
///
/// let run = TaskRun::new("parse_email", "msg-42").with_depth(1).with_payload_ref("msg-42");
/// assert_eq!(run.task(), "parse_email");
/// assert_eq!(run.payload(), Some(&Payload::Ref("msg-42".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    task: String,
    task_id: String,
    depth: u32,
    payload: Option<Payload>,
}

impl TaskRun {
    /// A root run (depth 0) of `task` with the run ID `task_id` and no payload.
    pub fn new(task: impl Into<String>, task_id: impl Into<String>) -> Self {
        TaskRun {
            task: task.into(),
            task_id: task_id.into(),
            depth: 0,
            payload: None,
        }
    }

    /// Sets how many tasks deep this run is (0 for a run nobody started).
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }

    /// Names the payload by reference.
    pub fn with_payload_ref(mut self, id: impl Into<String>) -> Self {
        self.payload = Some(Payload::Ref(id.into()));
        self
    }

    /// Carries the payload inline (dead-letter reports cap its size).
    pub fn with_inline_payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(Payload::Inline(bytes.into()));
        self
    }

    /// The task (function) name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The run ID, stable across retries.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// How many tasks deep this run is.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The payload to replay the run with, if known.
    pub fn payload(&self) -> Option<&Payload> {
        self.payload.as_ref()
    }
}
