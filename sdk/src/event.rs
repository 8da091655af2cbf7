//! The event model: one event is one logfmt line of ordered key/value pairs.
//!
//! The reserved keys are spelled out only here ([`keys`]) and are written first, in the
//! order of [`RESERVED_ORDER`]; every other key is a field kept in its original order.
//! Duplicate keys are kept as they came; lookups see the last one.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::logfmt::{self, LineFlags, ReadOptions};
use crate::timestamp::{self, TimestampError};

/// The names of the keys spoor gives a meaning to.
pub mod keys {
    /// RFC 3339 timestamp with nanoseconds and offset.
    pub const TS: &str = "ts";
    /// Severity: trace, debug, info, warn, error, fatal.
    pub const LEVEL: &str = "level";
    /// The human message.
    pub const MSG: &str = "msg";
    /// Task (function) name.
    pub const TASK: &str = "task";
    /// One run of a task, stable across its retries.
    pub const TASK_ID: &str = "task_id";
    /// 1 for the first try.
    pub const ATTEMPT: &str = "attempt";
    /// How many tasks deep (recursion guard).
    pub const DEPTH: &str = "depth";
    /// The task code's version.
    pub const VERSION: &str = "version";
    /// Host name where it ran.
    pub const HOST: &str = "host";
    /// Process ID where it ran.
    pub const PID: &str = "pid";
    /// Instance (container, Lambda log stream, VM) where it ran.
    pub const INSTANCE: &str = "instance";
    /// `log` (default), `deadletter`, `audit`, `alert`.
    pub const KIND: &str = "kind";
    /// Added by the collector: when it accepted the line.
    pub const INGEST_TS: &str = "ingest_ts";
    /// Added by the agent and collector: which agent forwarded the line.
    pub const AGENT: &str = "agent";
    /// Added by the collector: position in the audit log.
    pub const SEQ: &str = "seq";
    /// Added by the agent: which input the line came from.
    pub const SOURCE: &str = "source";
    /// Flag: the line looked like logfmt but failed to parse.
    pub const PARSE_ERROR: &str = "parse_error";
    /// Flag: the line was cut at the size limit.
    pub const TRUNCATED: &str = "truncated";
    /// Flag: invalid UTF-8 was replaced.
    pub const INVALID_UTF8: &str = "invalid_utf8";
}

/// The reserved keys, in the order an encoded event writes them.
pub const RESERVED_ORDER: [&str; 12] = [
    keys::TS,
    keys::LEVEL,
    keys::MSG,
    keys::TASK,
    keys::TASK_ID,
    keys::ATTEMPT,
    keys::DEPTH,
    keys::VERSION,
    keys::HOST,
    keys::PID,
    keys::INSTANCE,
    keys::KIND,
];

/// Severity of an event, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Finest detail.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
    /// A failure that ends the process or task.
    Fatal,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// 0 for trace up to 5 for fatal.
    pub fn severity(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that spoor does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level `{0}` (expected trace, debug, info, warn, error or fatal)")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Reads the canonical names in any case, and the common aliases of syslog and other
    /// loggers (`warning`, `err`, `notice`, `critical`, `panic`...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let level = match s.to_ascii_lowercase().as_str() {
            "trace" | "trc" => Level::Trace,
            "debug" | "dbg" => Level::Debug,
            "info" | "information" | "informational" | "notice" | "inf" => Level::Info,
            "warn" | "warning" | "wrn" => Level::Warn,
            "error" | "err" | "eror" => Level::Error,
            "fatal" | "critical" | "crit" | "panic" | "emerg" | "emergency" | "alert" => {
                Level::Fatal
            }
            _ => return Err(UnknownLevel(s.to_string())),
        };
        Ok(level)
    }
}

/// One event: ordered key/value pairs, duplicates kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pairs: Vec<(String, String)>,
}

impl Event {
    /// An event with no pairs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a line with the lenient reader (see [`logfmt::read_line`]).
    pub fn from_line(line: &[u8]) -> (Self, LineFlags) {
        logfmt::read_line(line, &ReadOptions::default())
    }

    /// Appends a pair, keeping any earlier pair with the same key.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Sets `key`: replaces the value of its last occurrence, or appends it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        match self.pairs.iter_mut().rev().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value.into(),
            None => self.pairs.push((key.to_string(), value.into())),
        }
    }

    /// Sets `key` only when the event does not have it.
    pub fn set_default(&mut self, key: &str, value: impl FnOnce() -> String) {
        if !self.contains(key) {
            self.pairs.push((key.to_string(), value()));
        }
    }

    /// The value of the last pair named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any pair is named `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// Removes every pair named `key`.
    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The pairs in their original order, duplicates included.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Mutable access to the values, in order, for transforms such as redaction.
    pub fn pairs_mut(&mut self) -> impl Iterator<Item = (&str, &mut String)> {
        self.pairs.iter_mut().map(|(k, v)| (k.as_str(), v))
    }

    /// How many pairs, duplicates included.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the event has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The `level`, when present and known.
    pub fn level(&self) -> Option<Level> {
        self.get(keys::LEVEL).and_then(|l| l.parse().ok())
    }

    /// The `ts`, when present; an error when present but unreadable.
    pub fn timestamp(&self) -> Option<Result<OffsetDateTime, TimestampError>> {
        self.get(keys::TS).map(timestamp::parse_timestamp)
    }

    /// Sets `ts` in spoor's canonical form.
    pub fn set_timestamp(&mut self, ts: OffsetDateTime) {
        self.set(keys::TS, timestamp::format_timestamp(ts));
    }

    /// Encodes the event as one logfmt line (no newline): reserved keys first in
    /// [`RESERVED_ORDER`], then the other keys in their original order.
    pub fn to_line(&self) -> String {
        let mut out =
            String::with_capacity(self.pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
        for reserved in RESERVED_ORDER {
            for (k, v) in self.pairs.iter().filter(|(k, _)| k == reserved) {
                logfmt::write_pair(&mut out, k, v);
            }
        }
        for (k, v) in self
            .pairs
            .iter()
            .filter(|(k, _)| !RESERVED_ORDER.contains(&k.as_str()))
        {
            logfmt::write_pair(&mut out, k, v);
        }
        out
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Event {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_come_first_in_design_order() {
        let event: Event = [
            ("user", "ada"),
            ("msg", "charge failed"),
            ("level", "error"),
            ("ts", "2026-11-30T03:21:03.123456789Z"),
            ("amount", "12"),
            ("task", "charge"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            event.to_line(),
            "ts=2026-11-30T03:21:03.123456789Z level=error msg=\"charge failed\" task=charge user=ada amount=12"
        );
    }

    #[test]
    fn duplicates_are_kept_and_last_wins() {
        let (event, _) = Event::from_line(b"a=1 b=2 a=3");
        assert_eq!(event.len(), 3);
        assert_eq!(event.get("a"), Some("3"));
        assert_eq!(event.to_line(), "a=1 b=2 a=3");
        let mut event = event;
        event.set("a", "4");
        assert_eq!(event.to_line(), "a=1 b=2 a=4");
    }

    #[test]
    fn typed_accessors() {
        let (event, _) = Event::from_line(b"ts=2026-11-30T03:21:03.5+01:00 level=WARNING msg=x");
        assert_eq!(event.level(), Some(Level::Warn));
        let ts = event.timestamp().expect("has ts").expect("parses");
        assert_eq!(ts.unix_timestamp(), 1_796_005_263);
        assert_eq!(ts.nanosecond(), 500_000_000);
        let (event, _) = Event::from_line(b"ts=soon level=loud msg=x");
        assert!(event.timestamp().expect("has ts").is_err());
        assert_eq!(event.level(), None);
    }

    #[test]
    fn levels_order_by_severity() {
        assert!(Level::Warn > Level::Info);
        assert_eq!("crit".parse::<Level>(), Ok(Level::Fatal));
        assert!("loud".parse::<Level>().is_err());
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
        }
    }
}
