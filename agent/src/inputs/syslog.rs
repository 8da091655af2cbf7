//! Syslog over TCP (`--syslog ADDR`), so rsyslog and syslog-ng can forward to the agent.
//!
//! **Framing** (RFC 6587), decided per message, so both work on one connection: a message
//! that starts with a digit is octet-counted (`LEN SP MSG`); anything else ends at `\n`
//! (a `\r` or NUL before it is dropped; so are trailing newlines inside a counted message,
//! which rsyslog sends). A message longer than `max_line_bytes` is cut there and the rest
//! discarded.
//!
//! **Formats.** After `<PRI>`:
//! - RFC 5424: `1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`, `-` for
//!   a nil value; a UTF-8 BOM before MSG is dropped; each SD parameter becomes the field
//!   `SD-ID.NAME`.
//! - RFC 3164 (BSD): `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`. The timestamp has no year
//!   and no zone: it is read as UTC in the current year (the previous one if that would
//!   put it more than a day ahead). A missing timestamp or hostname is tolerated; the tag
//!   ends at the first character that is not alphanumeric, `-`, `_`, `.` or `/`.
//!
//! The header becomes fields: `host`, `app`, `pid`, `msgid`, `facility` (its name, e.g.
//! `local0`), `level` from the severity (emerg, alert, crit → `fatal`; err → `error`;
//! warning → `warn`; notice, info → `info`; debug → `debug`) and `ts`; MSG becomes `msg`.
//! A message without a valid `<PRI>` is kept as a plain line. Every event then goes
//! through the same enrichment as other inputs with `source=syslog`.
//!
//! The parser is hand-written: the crates on crates.io (`syslog_loose`, `syslog_rfc5424`)
//! either pull in `chrono` (the workspace uses `time`) or cover only one of the two
//! formats, and neither frames a TCP stream; the grammar fits in this file with table
//! tests.

use time::{Month, OffsetDateTime, PrimitiveDateTime, Time};
use tokio::net::TcpListener;
use tokio::sync::watch;

use spoor_sdk::event::{Event, keys};
use spoor_sdk::timestamp::{format_timestamp, parse_timestamp};

use super::connection::{Framing, read_lines};
use super::socket::SocketContext;
use crate::metrics::{InputKind, inc};

/// Splits a TCP byte stream into syslog messages (octet-counted or newline-framed).
#[derive(Debug)]
pub(crate) struct Framer {
    max: usize,
    buf: Vec<u8>,
    /// Bytes of the current octet-counted message still to come.
    counted_left: Option<usize>,
    msg: Vec<u8>,
    /// Discarding the rest of an over-long newline-framed message.
    skipping_line: bool,
}

impl Framer {
    pub(crate) fn new(max: usize) -> Self {
        Framer {
            max,
            buf: Vec::new(),
            counted_left: None,
            msg: Vec::new(),
            skipping_line: false,
        }
    }

    /// Feeds bytes; calls `emit` for every complete message.
    pub(crate) fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if let Some(left) = self.counted_left {
                let take = left.min(rest.len());
                let room = self.max.saturating_sub(self.msg.len()).min(take);
                self.msg.extend_from_slice(&rest[..room]);
                at += take;
                if take == left {
                    // Senders such as rsyslog end counted messages with a newline too.
                    let mut m = &self.msg[..];
                    while let [head @ .., b'\n' | b'\r' | 0] = m {
                        m = head;
                    }
                    emit(m);
                    self.msg.clear();
                    self.counted_left = None;
                    continue;
                }
                self.counted_left = Some(left - take);
                break;
            }
            if self.skipping_line {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        at += i + 1;
                        self.skipping_line = false;
                        continue;
                    }
                    None => {
                        at = self.buf.len();
                        break;
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
            if rest[0].is_ascii_digit() {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                match rest.get(digits) {
                    Some(b' ') if digits <= 10 => {
                        let len = std::str::from_utf8(&rest[..digits])
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok());
                        if let Some(len) = len {
                            self.counted_left = Some(len);
                            at += digits + 1;
                            continue;
                        }
                    }
                    None if digits <= 10 => break,
                    _ => {}
                }
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = &rest[..i];
                    while let [head @ .., b'\r' | 0] = line {
                        line = head;
                    }
                    if !line.is_empty() {
                        emit(&line[..line.len().min(self.max)]);
                    }
                    at += i + 1;
                }
                None if rest.len() > self.max => {
                    emit(&rest[..self.max]);
                    at = self.buf.len();
                    self.skipping_line = true;
                    break;
                }
                None => break,
            }
        }
        self.buf.drain(..at);
    }

    /// The peer closed: hands out an unfinished message, if any.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.counted_left.take().is_some() && !self.msg.is_empty() {
            emit(&self.msg);
        } else if !self.buf.is_empty() && !self.skipping_line {
            let n = self.buf.len().min(self.max);
            emit(&self.buf[..n]);
        }
        self.msg.clear();
        self.buf.clear();
    }
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The event level of a syslog severity (0 emerg … 7 debug).
pub(crate) fn level_of(severity: u8) -> &'static str {
    match severity {
        0..=2 => "fatal",
        3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// Parses one syslog message into an event, or `None` when it has no valid `<PRI>`.
pub(crate) fn parse(raw: &[u8], now: OffsetDateTime) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let rest = text.strip_prefix('<')?;
    let close = rest.find('>')?;
    let pri: u8 = match &rest[..close] {
        p if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok().filter(|&v| v <= 191)?
        }
        _ => return None,
    };
    let body = &rest[close + 1..];
    let mut event = Event::new();
    let severity = pri % 8;
    let facility = FACILITIES[usize::from(pri / 8)];
    if let Some(v5424) = body.strip_prefix("1 ") {
        parse_5424(v5424, &mut event);
    } else {
        parse_3164(body, now, &mut event);
    }
    event.set(keys::LEVEL, level_of(severity));
    event.set("facility", facility);
    Some(event)
}

/// Splits off the next space-separated token.
fn token(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn set_unless_nil(event: &mut Event, key: &str, value: &str) {
    if !value.is_empty() && value != "-" {
        event.set(key, value);
    }
}

fn parse_5424(s: &str, event: &mut Event) {
    let (ts, s) = token(s);
    if let Ok(t) = parse_timestamp(ts) {
        event.set(keys::TS, format_timestamp(t));
    }
    let (host, s) = token(s);
    let (app, s) = token(s);
    let (pid, s) = token(s);
    let (msgid, s) = token(s);
    set_unless_nil(event, keys::HOST, host);
    set_unless_nil(event, "app", app);
    set_unless_nil(event, keys::PID, pid);
    set_unless_nil(event, "msgid", msgid);
    let msg = match s.strip_prefix('-') {
        Some(m) => m,
        None => structured_data(s, event),
    };
    let msg = msg.strip_prefix(' ').unwrap_or(msg);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    event.set(keys::MSG, msg);
}

/// Reads `[id name="value" ...]...` into fields `id.name`; returns what follows.
fn structured_data<'a>(mut s: &'a str, event: &mut Event) -> &'a str {
    while let Some(inner) = s.strip_prefix('[') {
        let (id, mut r) = match inner.find([' ', ']']) {
            Some(i) => (&inner[..i], &inner[i..]),
            None => return "",
        };
        loop {
            r = r.trim_start_matches(' ');
            if let Some(after) = r.strip_prefix(']') {
                s = after;
                break;
            }
            let Some(eq) = r.find('=') else { return "" };
            let name = &r[..eq];
            let Some(quoted) = r[eq + 1..].strip_prefix('"') else {
                return "";
            };
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => {}
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let Some(end) = end else { return "" };
            event.set(&format!("{id}.{name}"), value);
            r = &quoted[end..];
        }
    }
    s
}

fn parse_3164(s: &str, now: OffsetDateTime, event: &mut Event) {
    let mut s = s;
    if let Some((ts, rest)) = bsd_timestamp(s, now) {
        event.set(keys::TS, format_timestamp(ts));
        s = rest;
        // A hostname follows the timestamp unless the next word is already the tag.
        let (word, rest) = token(s);
        let is_tag = word.ends_with(':') || word.contains('[');
        if !word.is_empty() && !is_tag {
            event.set(keys::HOST, word);
            s = rest;
        }
    }
    let tag_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        .unwrap_or(s.len());
    let (tag, mut rest) = s.split_at(tag_len);
    if !tag.is_empty() && (rest.starts_with('[') || rest.starts_with(':')) {
        event.set("app", tag);
        if let Some(p) = rest.strip_prefix('[')
            && let Some(close) = p.find(']')
        {
            set_unless_nil(event, keys::PID, &p[..close]);
            rest = &p[close + 1..];
        }
        rest = rest.strip_prefix(':').unwrap_or(rest);
        s = rest.strip_prefix(' ').unwrap_or(rest);
    }
    event.set(keys::MSG, s);
}

/// `Mmm dd hh:mm:ss ` (day padded with a space or a zero).
fn bsd_timestamp(s: &str, now: OffsetDateTime) -> Option<(OffsetDateTime, &str)> {
    let head = s.get(..15)?;
    let month = match head.get(..3)? {
        "Jan" => Month::January,
        "Feb" => Month::February,
        "Mar" => Month::March,
        "Apr" => Month::April,
        "May" => Month::May,
        "Jun" => Month::June,
        "Jul" => Month::July,
        "Aug" => Month::August,
        "Sep" => Month::September,
        "Oct" => Month::October,
        "Nov" => Month::November,
        "Dec" => Month::December,
        _ => return None,
    };
    let b = head.as_bytes();
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| head.get(r)?.trim_start().parse::<u8>().ok();
    let day = num(4..6)?;
    let time = Time::from_hms(num(7..9)?, num(10..12)?, num(13..15)?).ok()?;
    let at = |year| {
        let date = time::Date::from_calendar_date(year, month, day).ok()?;
        Some(PrimitiveDateTime::new(date, time).assume_utc())
    };
    let mut ts = at(now.year())?;
    if ts > now + time::Duration::days(1) {
        ts = at(now.year() - 1)?;
    }
    let rest = s.get(15..)?;
    Some((ts, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// Accepts syslog connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: SocketContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Accepting a syslog connection failed.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            inc(&ctx.metrics.connections_rejected, 1);
            tracing::warn!("Connection limit reached; refused a syslog connection.");
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            handle(stream, &ctx, shutdown).await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn handle(
    stream: tokio::net::TcpStream,
    ctx: &SocketContext,
    shutdown: watch::Receiver<bool>,
) {
    let mut framer = Framer::new(ctx.max_line_bytes);
    let to_line = |raw: &[u8]| {
        let (line, flags) = match parse(raw, OffsetDateTime::now_utc()) {
            Some(event) => ctx.enricher.enrich(event.to_line().as_bytes(), "syslog"),
            None => ctx.enricher.enrich(raw, "syslog"),
        };
        (line, flags.truncated)
    };
    read_lines(
        stream,
        InputKind::Syslog,
        &mut framer,
        0,
        ctx,
        shutdown,
        &to_line,
    )
    .await;
}

impl Framing for Framer {
    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        Framer::feed(self, data, emit);
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        Framer::finish(self, emit);
    }

    fn take_discarded(&mut self) -> u64 {
        // Over-long syslog messages are cut by the framer, not counted as discarded bytes.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-30 12:00:00 UTC);

    #[track_caller]
    fn check(raw: &str, expected: &str) {
        let event = parse(raw.as_bytes(), NOW).expect("a syslog message");
        assert_eq!(event.to_line(), expected, "input {raw:?}");
    }

    #[test]
    fn rfc5424_messages() {
        check(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] \u{feff}An application event",
            "ts=2003-10-11T22:14:15.003000000Z level=info msg=\"An application event\" host=mymachine.example.com app=evntslog msgid=ID47 exampleSDID@32473.iut=3 exampleSDID@32473.eventSource=Application facility=local4",
        );
        check(
            "<34>1 2003-10-11T22:14:15.003-07:00 h su 42 - - 'su root' failed",
            "ts=2003-10-11T22:14:15.003000000-07:00 level=fatal msg=\"'su root' failed\" host=h pid=42 app=su facility=auth",
        );
        check("<13>1 - - - - - -", "level=info msg= facility=user");
        check(
            "<11>1 2026-01-01T00:00:00Z h a - - [x@1 q=\"a\\\"b\\]c\\\\\"][y@2] done",
            "ts=2026-01-01T00:00:00.000000000Z level=error msg=done host=h app=a x@1.q=\"a\\\"b]c\\\\\" facility=user",
        );
    }

    #[test]
    fn rfc3164_messages() {
        check(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            "ts=2026-10-11T22:14:15.000000000Z level=fatal msg=\"'su root' failed for lonvick on /dev/pts/8\" host=mymachine app=su facility=auth",
        );
        check(
            "<30>Dec  5 08:00:00 web-3 nginx[4242]: GET / 200",
            "ts=2025-12-05T08:00:00.000000000Z level=info msg=\"GET / 200\" host=web-3 pid=4242 app=nginx facility=daemon",
        );
        check(
            "<191>Nov 30 11:00:00 sshd[7]: Accepted key",
            "ts=2026-11-30T11:00:00.000000000Z level=debug msg=\"Accepted key\" pid=7 app=sshd facility=local7",
        );
        check(
            "<12>just text",
            "level=warn msg=\"just text\" facility=user",
        );
    }

    #[test]
    fn invalid_priorities_are_not_syslog() {
        for raw in ["no pri", "<192>1 - - - - - -", "<>x", "<1234>x", "<a>x"] {
            assert!(parse(raw.as_bytes(), NOW).is_none(), "{raw}");
        }
    }

    fn frame(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |m| out.push(String::from_utf8_lossy(m).into_owned()));
        }
        f.finish(|m| out.push(String::from_utf8_lossy(m).into_owned()));
        out
    }

    #[test]
    fn framing_octet_counted_and_newline() {
        assert_eq!(
            frame(100, &[b"5 <1>ab3 <2>", b"c<3>x\r\n<4>y\n", b"\n5 <5>z\n"]),
            vec!["<1>ab", "<2>", "c<3>x", "<4>y", "<5>z"]
        );
        assert_eq!(
            frame(100, &[b"1", b"0 <1>4567890<2>tail"]),
            vec!["<1>4567890", "<2>tail"]
        );
        // Over-long messages are cut; the rest is skipped.
        assert_eq!(frame(4, &[b"10 0123456789<1>\n"]), vec!["0123", "<1>"]);
        assert_eq!(frame(4, &[b"<1>456", b"789\n<2>\n"]), vec!["<1>4", "<2>"]);
        // Digits not followed by a space are no count: newline framing.
        assert_eq!(frame(100, &[b"12ab\n"]), vec!["12ab"]);
    }
}
