//! Turns one raw input line into the agent's output line: the lenient decoder
//! ([`spoor_sdk::logfmt::read_line`]) never drops a line; then `agent` and `source` are set
//! (overwriting what the sender wrote, since they say where the line really came from) and
//! `host` and `ts` (receive time) are filled only when absent. The output is the event's
//! canonical logfmt encoding, without a newline.
//!
//! With redaction on, [`crate::redact`] runs on the decoded event first, so no secret
//! reaches the batch. An event a `drop_event` rule dropped comes out as an empty line,
//! which the batcher skips (every real output line has at least `agent=`).

use spoor_sdk::event::keys;
use spoor_sdk::logfmt::{LineFlags, ReadOptions, read_line};
use spoor_sdk::timestamp::format_timestamp;
use time::OffsetDateTime;

/// Shared, immutable enrichment settings.
#[derive(Debug, Clone)]
pub(crate) struct Enricher {
    agent_id: String,
    host: String,
    options: ReadOptions,
    redactor: crate::redact::RedactorSlot,
}

impl Enricher {
    pub(crate) fn new(agent_id: String, host: String, max_line_bytes: usize) -> Self {
        Enricher {
            agent_id,
            host,
            options: ReadOptions { max_line_bytes },
            redactor: crate::redact::RedactorSlot::default(),
        }
    }

    /// Redacts every event with the redactor in `redactor` (before enrichment); a
    /// configuration reload swaps what the slot holds.
    pub(crate) fn with_redactor(mut self, redactor: crate::redact::RedactorSlot) -> Self {
        self.redactor = redactor;
        self
    }

    /// Decodes and enriches `raw` (its trailing `\n`/`\r\n` is ignored) received now from
    /// `source`.
    pub(crate) fn enrich(&self, raw: &[u8], source: &str) -> (String, LineFlags) {
        self.enrich_at(raw, source, OffsetDateTime::now_utc())
    }

    pub(crate) fn enrich_at(
        &self,
        raw: &[u8],
        source: &str,
        received: OffsetDateTime,
    ) -> (String, LineFlags) {
        let (mut event, flags) = read_line(raw, &self.options);
        if let Some(r) = self.redactor.load().as_deref()
            && r.apply(&mut event) == crate::redact::Outcome::Drop
        {
            return (String::new(), flags);
        }
        event.set(keys::AGENT, self.agent_id.as_str());
        event.set(keys::SOURCE, source);
        event.set_default(keys::HOST, || self.host.clone());
        event.set_default(keys::TS, || format_timestamp(received));
        (event.to_line(), flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[track_caller]
    fn check(raw: &str, expected: &str) {
        let e = Enricher::new("a1".into(), "web-1".into(), 200);
        let (line, _) = e.enrich_at(raw.as_bytes(), "tcp", datetime!(2026-01-02 03:04:05.5 UTC));
        assert_eq!(line, expected, "input {raw:?}");
    }

    #[test]
    fn fills_only_what_is_missing() {
        check(
            "level=info msg=hi\r\n",
            "ts=2026-01-02T03:04:05.500000000Z level=info msg=hi host=web-1 agent=a1 source=tcp",
        );
        check(
            "ts=2020-01-01T00:00:00Z host=h1 msg=x agent=forged source=forged",
            "ts=2020-01-01T00:00:00Z msg=x host=h1 agent=a1 source=tcp",
        );
        check(
            "plain text",
            "ts=2026-01-02T03:04:05.500000000Z msg=\"plain text\" host=web-1 agent=a1 source=tcp",
        );
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let e = Enricher::new("a1".into(), "h".into(), 16);
        let (line, flags) = e.enrich(&[b'x'; 40], "unix");
        assert!(flags.truncated);
        assert!(line.contains(&format!("msg={}", "x".repeat(16))), "{line}");
        assert!(line.contains("truncated=true"), "{line}");
    }
}
