//! Task scopes: [`task()`] marks one run of a task so that every line logged inside it
//! carries `task`, `task_id`, `attempt` and `depth`, and so that debug buffering (see
//! [`crate::layer`]) knows where a run begins and ends.
//!
//! The scope is a `tracing` span (target `spoor_sdk::task`, name `task`) with those four
//! fields. [`task()`] enters it on the current thread until the guard drops; for async code
//! take the span from [`task_span`] and instrument the future with it.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Span;

use crate::layer::TASK_TARGET;

/// The span of one task run. Lines inside it carry its task keys.
pub fn task_span(task: &str, task_id: &str, attempt: u32, depth: u32) -> Span {
    // ERROR level so that no level filter in a user's own subscriber stack hides the
    // scope; the span itself is never written as a line.
    tracing::span!(target: TASK_TARGET, tracing::Level::ERROR, "task", task, task_id, attempt, depth)
}

/// Enters a task run on this thread until the returned guard drops:
///
/// ```
/// let _run = spoor_sdk::task("parse_email", "msg-42", 1, 0);
/// tracing::info!(bytes = 512, "Parsed.");
/// // -> ... msg=Parsed. task=parse_email task_id=msg-42 attempt=1 depth=0 ... bytes=512
/// ```
pub fn task(task: &str, task_id: &str, attempt: u32, depth: u32) -> TaskGuard {
    TaskGuard {
        span: task_span(task, task_id, attempt, depth).entered(),
    }
}

/// A task run entered on the current thread; leaving it (drop) ends the run for debug
/// buffering unless the span is still held elsewhere.
#[must_use = "the task scope ends when the guard is dropped"]
#[derive(Debug)]
pub struct TaskGuard {
    span: tracing::span::EnteredSpan,
}

impl TaskGuard {
    /// The run's span, for example to pass to threads it starts.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Leaves the scope on this thread but keeps the span (and the run) alive.
    pub fn exit(self) -> Span {
        self.span.exit()
    }
}

/// A new run ID: 26 characters of Crockford base32, time-ordered like a ULID (48 bits of
/// milliseconds, 80 bits that differ per process and per call).
pub fn new_task_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = now.as_millis() & ((1 << 48) - 1);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let a = hasher.finish();
    hasher.write_u64(a);
    let b = hasher.finish();
    let random = (u128::from(a) << 16 | u128::from(b & 0xffff)) & ((1 << 80) - 1);
    let mut n = millis << 80 | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_unique_and_sort_by_time() {
        let ids: Vec<String> = (0..1000).map(|_| new_task_id()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert!(
            ids.iter()
                .all(|id| id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        );
        let earlier = &ids[0][..10];
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_task_id()[..10] > *earlier);
    }
}
