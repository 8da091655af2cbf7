//! The recursion guard: tasks that start tasks pass `depth` on, and a chain that grows past
//! a limit is refused instead of running (and billing) forever.
//!
//! A run nobody started has depth 0; a child of a run at depth `d` has depth `d + 1`.
//! Starting a child whose depth would exceed the limit (default [`DEFAULT_MAX_DEPTH`]) fails
//! with [`DepthError`] and emits a `level=error` event naming the chain: the parent's `task`,
//! `task_id` and `depth`, the `child_task` and the `max_depth`.
//!
//! ```
//! use spoor_sdk::depth::RecursionGuard;
//! use spoor_sdk::task_run::TaskRun;
//!
//! let guard = RecursionGuard::new(2);
//! let parent = TaskRun::new("crawl", "run-1").with_depth(1);
//! assert_eq!(guard.child_depth(&parent, "crawl").ok(), Some(2));
//! let too_deep = TaskRun::new("crawl", "run-2").with_depth(2);
//! assert!(guard.child_depth(&too_deep, "crawl").is_err());
//! ```

use crate::task_run::TaskRun;

/// The default limit on `depth`.
pub const DEFAULT_MAX_DEPTH: u32 = 10;

/// The payload key that carries the depth from parent to child.
pub const PAYLOAD_KEY: &str = crate::event::keys::DEPTH;

/// Refuses to start child tasks beyond a depth limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecursionGuard {
    max_depth: u32,
}

impl Default for RecursionGuard {
    /// A guard with the limit [`DEFAULT_MAX_DEPTH`].
    fn default() -> Self {
        RecursionGuard {
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A child task was refused because the chain is already as deep as allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to start task `{child_task}` from `{task}` (task_id {task_id}) at depth {depth}: \
     the limit is {max_depth}, which suggests tasks starting each other in a loop"
)]
pub struct DepthError {
    /// The parent's task name.
    pub task: String,
    /// The parent's run ID.
    pub task_id: String,
    /// The parent's depth.
    pub depth: u32,
    /// The task that was to be started.
    pub child_task: String,
    /// The limit.
    pub max_depth: u32,
}

impl RecursionGuard {
    /// A guard that allows chains down to depth `max_depth`.
    pub fn new(max_depth: u32) -> Self {
        RecursionGuard { max_depth }
    }

    /// The limit.
    pub fn max_depth(&self) -> u32 {
        self.max_depth
    }

    /// The depth for a child of `parent` named `child_task`, or an error (and an
    /// error-level event) when that would exceed the limit.
    pub fn child_depth(&self, parent: &TaskRun, child_task: &str) -> Result<u32, DepthError> {
        match parent.depth().checked_add(1) {
            Some(child) if child <= self.max_depth => Ok(child),
            _ => {
                let error = DepthError {
                    task: parent.task().to_string(),
                    task_id: parent.task_id().to_string(),
                    depth: parent.depth(),
                    child_task: child_task.to_string(),
                    max_depth: self.max_depth,
                };
                tracing::error!(
                    task = error.task.as_str(),
                    task_id = error.task_id.as_str(),
                    depth = error.depth,
                    child_task,
                    max_depth = self.max_depth,
                    "Refused to start a child task: recursion limit reached."
                );
                Err(error)
            }
        }
    }

    /// A child run of `parent`: task `child_task`, run ID `child_task_id`, one level deeper.
    pub fn child_run(
        &self,
        parent: &TaskRun,
        child_task: &str,
        child_task_id: impl Into<String>,
    ) -> Result<TaskRun, DepthError> {
        let depth = self.child_depth(parent, child_task)?;
        Ok(TaskRun::new(child_task, child_task_id).with_depth(depth))
    }

    /// The JSON payload for a child of `parent`: `fields` plus `"depth": parent depth + 1`.
    #[cfg(feature = "json")]
    pub fn child_payload(
        &self,
        parent: &TaskRun,
        child_task: &str,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, DepthError> {
        let depth = self.child_depth(parent, child_task)?;
        fields.insert(PAYLOAD_KEY.to_string(), serde_json::Value::from(depth));
        Ok(serde_json::Value::Object(fields))
    }
}

/// The depth a JSON payload carries: its `depth` as a non-negative integer (also accepted
/// as a string of digits), 0 when absent or unreadable.
#[cfg(feature = "json")]
pub fn depth_of(payload: &serde_json::Value) -> u32 {
    match payload.get(PAYLOAD_KEY) {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().and_then(|d| u32::try_from(d).ok()).unwrap_or(0)
        }
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_allows_ten_levels() {
        let guard = RecursionGuard::default();
        let mut run = TaskRun::new("t", "0");
        for expected in 1..=10 {
            run = guard
                .child_run(&run, "t", expected.to_string())
                .expect("within the limit");
            assert_eq!(run.depth(), expected);
        }
        let error = guard
            .child_run(&run, "u", "11")
            .expect_err("past the limit");
        assert_eq!(
            error,
            DepthError {
                task: "t".into(),
                task_id: "10".into(),
                depth: 10,
                child_task: "u".into(),
                max_depth: 10
            }
        );
        assert!(error.to_string().contains("depth 10"));
    }

    #[test]
    fn depth_at_u32_max_is_refused_not_wrapped() {
        let guard = RecursionGuard::new(u32::MAX);
        let run = TaskRun::new("t", "x").with_depth(u32::MAX);
        assert!(guard.child_depth(&run, "t").is_err());
    }

    #[cfg(feature = "json")]
    #[test]
    fn child_payload_carries_depth_plus_one() {
        let guard = RecursionGuard::default();
        let parent_payload = serde_json::json!({"message_id": "m1", "depth": 3});
        let parent = TaskRun::new("parse_email", "r1").with_depth(depth_of(&parent_payload));
        let mut fields = serde_json::Map::new();
        fields.insert("link_id".into(), "l7".into());
        let child = guard
            .child_payload(&parent, "link_analysis", fields)
            .expect("allowed");
        assert_eq!(child, serde_json::json!({"link_id": "l7", "depth": 4}));
        assert_eq!(depth_of(&child), 4);
        assert_eq!(depth_of(&serde_json::json!({})), 0);
        assert_eq!(depth_of(&serde_json::json!({"depth": "2"})), 2);
        assert_eq!(depth_of(&serde_json::json!({"depth": -1})), 0);
    }
}
