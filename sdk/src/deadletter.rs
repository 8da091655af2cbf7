//! Dead-letter reports: the event a task emits when it gives up on a payload, so the
//! collector's dead-letter store can show it and replay it.
//!
//! A report is an ordinary `level=error` log event with `kind=deadletter`, `task`,
//! `task_id`, `attempts`, `error`, `first_failed`, `last_failed` and either `payload_ref`
//! (an ID, preferred) or `payload` (inline, cut to [`DEFAULT_INLINE_LIMIT`] bytes and
//! flagged `payload_truncated=true` when cut; base64 with `payload_encoding=base64` when not
//! UTF-8). It is emitted through `tracing`, so it travels the normal log path (queue, spill
//! file, agent) and survives agent outages like any other line.
//!
//! The retry helpers ([`crate::retry`]) and the batch helper ([`crate::batch`]) emit reports
//! themselves; [`DeadLetter::emit`] is for task code that gives up on its own.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use time::OffsetDateTime;

use crate::event::{Event, Level, keys};
use crate::task_run::{Payload, TaskRun};
use crate::timestamp::format_timestamp;

/// The `kind` of a dead-letter report.
pub const KIND: &str = "deadletter";

/// How many payload bytes a report carries inline by default.
pub const DEFAULT_INLINE_LIMIT: usize = 4096;

/// The field names of a dead-letter report, besides the reserved keys.
pub mod fields {
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "attempts";
    /// The last error, as text.
    pub const ERROR: &str = "error";
    /// When the first attempt failed (RFC 3339).
    pub const FIRST_FAILED: &str = "first_failed";
    /// When the last attempt failed (RFC 3339).
    pub const LAST_FAILED: &str = "last_failed";
    /// The payload's ID.
    pub const PAYLOAD_REF: &str = "payload_ref";
    /// The payload itself, inline.
    pub const PAYLOAD: &str = "payload";
    /// `base64` when the inline payload is not UTF-8.
    pub const PAYLOAD_ENCODING: &str = "payload_encoding";
    /// `true` when the inline payload was cut at the size limit.
    pub const PAYLOAD_TRUNCATED: &str = "payload_truncated";
}

/// The message of a dead-letter report.
pub const MESSAGE: &str = "Gave up on the payload; dead-lettered.";

/// One dead-letter report.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use spoor_sdk::deadletter::DeadLetter;
/// use spoor_sdk::task_run::TaskRun;
///
/// let run = TaskRun::new("link_analysis", "run-7").with_payload_ref("link-3");
/// let failed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let report = DeadLetter::new(&run, 3, "connection refused", failed, failed);
/// let event = report.to_event();
/// assert_eq!(event.get("kind"), Some("deadletter"));
/// assert_eq!(event.get("payload_ref"), Some("link-3"));
/// report.emit(); // an error-level `tracing` event with the same fields
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    task: String,
    task_id: String,
    attempts: u32,
    error: String,
    first_failed: OffsetDateTime,
    last_failed: OffsetDateTime,
    payload: Option<Payload>,
    inline_limit: usize,
}

/// The payload as it appears in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PayloadFields {
    payload_ref: Option<String>,
    payload: Option<String>,
    encoding: Option<&'static str>,
    truncated: bool,
}

impl DeadLetter {
    /// A report on `run` after `attempts` attempts, the last of which failed with `error`.
    pub fn new(
        run: &TaskRun,
        attempts: u32,
        error: impl fmt::Display,
        first_failed: SystemTime,
        last_failed: SystemTime,
    ) -> Self {
        DeadLetter {
            task: run.task().to_string(),
            task_id: run.task_id().to_string(),
            attempts,
            error: error.to_string(),
            first_failed: OffsetDateTime::from(first_failed),
            last_failed: OffsetDateTime::from(last_failed),
            payload: run.payload().cloned(),
            inline_limit: DEFAULT_INLINE_LIMIT,
        }
    }

    /// Caps an inline payload at `bytes` instead of [`DEFAULT_INLINE_LIMIT`].
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The run ID.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last error, as text.
    pub fn error(&self) -> &str {
        &self.error
    }

    fn payload_fields(&self) -> PayloadFields {
        match &self.payload {
            None => PayloadFields {
                payload_ref: None,
                payload: None,
                encoding: None,
                truncated: false,
            },
            Some(Payload::Ref(id)) => PayloadFields {
                payload_ref: Some(id.clone()),
                payload: None,
                encoding: None,
                truncated: false,
            },
            Some(Payload::Inline(bytes)) => {
                let truncated = bytes.len() > self.inline_limit;
                let (payload, encoding) = match std::str::from_utf8(bytes) {
                    Ok(text) => (
                        cut_at_char_boundary(text, self.inline_limit).to_string(),
                        None,
                    ),
                    Err(_) => {
                        let kept = &bytes[..bytes.len().min(self.inline_limit)];
                        (
                            base64::engine::general_purpose::STANDARD.encode(kept),
                            Some("base64"),
                        )
                    }
                };
                PayloadFields {
                    payload_ref: None,
                    payload: Some(payload),
                    encoding,
                    truncated,
                }
            }
        }
    }

    /// The report as a spoor event (without `ts`, which the layer adds when it is emitted).
    pub fn to_event(&self) -> Event {
        let mut event = Event::new();
        event.push(keys::LEVEL, Level::Error.as_str());
        event.push(keys::MSG, MESSAGE);
        event.push(keys::TASK, self.task.as_str());
        event.push(keys::TASK_ID, self.task_id.as_str());
        event.push(keys::KIND, KIND);
        event.push(fields::ATTEMPTS, self.attempts.to_string());
        event.push(fields::ERROR, self.error.as_str());
        event.push(fields::FIRST_FAILED, format_timestamp(self.first_failed));
        event.push(fields::LAST_FAILED, format_timestamp(self.last_failed));
        let payload = self.payload_fields();
        if let Some(id) = payload.payload_ref {
            event.push(fields::PAYLOAD_REF, id);
        }
        if let Some(inline) = payload.payload {
            event.push(fields::PAYLOAD, inline);
        }
        if let Some(encoding) = payload.encoding {
            event.push(fields::PAYLOAD_ENCODING, encoding);
        }
        if payload.truncated {
            event.push(fields::PAYLOAD_TRUNCATED, "true");
        }
        event
    }

    /// Emits the report as an error-level `tracing` event with the fields of
    /// [`DeadLetter::to_event`], for the SDK layer to send like any other line.
    pub fn emit(&self) {
        let payload = self.payload_fields();
        tracing::error!(
            kind = KIND,
            task = self.task.as_str(),
            task_id = self.task_id.as_str(),
            attempts = self.attempts,
            error = self.error.as_str(),
            first_failed = format_timestamp(self.first_failed).as_str(),
            last_failed = format_timestamp(self.last_failed).as_str(),
            payload_ref = payload.payload_ref.as_deref(),
            payload = payload.payload.as_deref(),
            payload_encoding = payload.encoding,
            payload_truncated = payload.truncated.then_some(true),
            "{MESSAGE}"
        );
    }
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a char boundary.
fn cut_at_char_boundary(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reference_payload_is_reported_by_id() {
        let run = TaskRun::new("t", "id-1").with_payload_ref("blob/9");
        let event =
            DeadLetter::new(&run, 2, "boom", at(1_800_000_000), at(1_800_000_005)).to_event();
        let line = event.to_line();
        let (back, flags) = Event::from_line(line.as_bytes());
        assert!(flags.logfmt);
        assert_eq!(back.get("kind"), Some("deadletter"));
        assert_eq!(back.get("level"), Some("error"));
        assert_eq!(back.get("task"), Some("t"));
        assert_eq!(back.get("task_id"), Some("id-1"));
        assert_eq!(back.get("attempts"), Some("2"));
        assert_eq!(back.get("error"), Some("boom"));
        assert_eq!(
            back.get("first_failed"),
            Some("2027-01-15T08:00:00.000000000Z")
        );
        assert_eq!(
            back.get("last_failed"),
            Some("2027-01-15T08:00:05.000000000Z")
        );
        assert_eq!(back.get("payload_ref"), Some("blob/9"));
        assert!(!back.contains("payload"));
    }

    #[test]
    fn utf8_inline_payload_is_cut_on_a_char_boundary() {
        let run = TaskRun::new("t", "id").with_inline_payload("héllo wörld".as_bytes());
        let event = DeadLetter::new(&run, 1, "e", at(0), at(0))
            .with_inline_limit(2)
            .to_event();
        assert_eq!(event.get("payload"), Some("h"));
        assert_eq!(event.get("payload_truncated"), Some("true"));
        assert!(!event.contains("payload_encoding"));

        let event = DeadLetter::new(&run, 1, "e", at(0), at(0)).to_event();
        assert_eq!(event.get("payload"), Some("héllo wörld"));
        assert!(!event.contains("payload_truncated"));
    }

    #[test]
    fn binary_inline_payload_is_base64() {
        let run = TaskRun::new("t", "id").with_inline_payload(vec![0xff, 0x00, 0xfe, 0x41]);
        let event = DeadLetter::new(&run, 1, "e", at(0), at(0)).to_event();
        assert_eq!(event.get("payload"), Some("/wD+QQ=="));
        assert_eq!(event.get("payload_encoding"), Some("base64"));

        let event = DeadLetter::new(&run, 1, "e", at(0), at(0))
            .with_inline_limit(3)
            .to_event();
        assert_eq!(event.get("payload"), Some("/wD+"));
        assert_eq!(event.get("payload_truncated"), Some("true"));
    }
}
