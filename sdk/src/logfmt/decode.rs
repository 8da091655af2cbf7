//! logfmt decoder: a strict parser that names its errors, and a lenient line reader that
//! never fails and never loses a byte.

use std::borrow::Cow;
use std::fmt;

use crate::event::{Event, keys};

/// One decoded pair. `value` is `None` for a bare key, which means `true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The key, borrowed from the input (keys have no escapes).
    pub key: &'a str,
    /// The value: borrowed when it had no escapes, `None` for a bare key.
    pub value: Option<Cow<'a, str>>,
}

impl Pair<'_> {
    /// The value as a string: a bare key reads as `true`.
    pub fn value_str(&self) -> &str {
        self.value.as_deref().unwrap_or("true")
    }
}

/// What the strict parser expected and did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// `=` where a key should start (`=bar`).
    EqualsWithoutKey,
    /// `"` where a key should be (`"k"=v`, `k"x=1`).
    QuoteInKey,
    /// A quoted value with no closing quote.
    UnterminatedQuote,
    /// A backslash escape that JSON does not define, or a short `\u`.
    BadEscape,
    /// `"` inside a bare value (`k=b"ar`).
    QuoteInBareValue,
    /// `=` inside a bare value (`a==`, `k=a=b`).
    EqualsInBareValue,
    /// A control character outside quotes.
    ControlCharacter,
    /// Something other than a space or tab right after a closing quote.
    MissingSeparator,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
}

impl DecodeErrorKind {
    fn expected(self) -> &'static str {
        match self {
            Self::EqualsWithoutKey => "a key before `=`",
            Self::QuoteInKey => "a key without `\"` (keys cannot be quoted)",
            Self::UnterminatedQuote => "a closing `\"` for the quote opened here",
            Self::BadEscape => {
                "a valid escape (`\\\"` `\\\\` `\\/` `\\b` `\\f` `\\n` `\\r` `\\t` `\\uXXXX`)"
            }
            Self::QuoteInBareValue => "no `\"` inside an unquoted value (quote the value)",
            Self::EqualsInBareValue => "no `=` inside an unquoted value (quote the value)",
            Self::ControlCharacter => "no control character outside quotes",
            Self::MissingSeparator => "a space or tab after the closing `\"`",
            Self::InvalidUtf8 => "valid UTF-8",
        }
    }
}

/// A strict-mode syntax error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// Byte offset into the line where the problem is.
    pub position: usize,
    /// What went wrong.
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "logfmt error at byte {}: expected {}",
            self.position,
            self.kind.expected()
        )
    }
}

fn err(position: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { position, kind }
}

fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parses one line strictly. A trailing `\n` and `\r` are ignored.
pub fn parse_strict(line: &[u8]) -> Result<Vec<Pair<'_>>, DecodeError> {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => return Err(err(e.valid_up_to(), DecodeErrorKind::InvalidUtf8)),
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let bytes = text.as_bytes();
    let mut pairs = Vec::with_capacity(16);
    let mut i = 0;
    loop {
        while i < bytes.len() && is_separator(bytes[i]) {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(pairs);
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] > b' ' && bytes[i] != b'=' && bytes[i] != b'"' {
            i += 1;
        }
        if i == key_start {
            return Err(err(
                i,
                match bytes[i] {
                    b'=' => DecodeErrorKind::EqualsWithoutKey,
                    b'"' => DecodeErrorKind::QuoteInKey,
                    _ => DecodeErrorKind::ControlCharacter,
                },
            ));
        }
        let key = &text[key_start..i];
        if i >= bytes.len() || is_separator(bytes[i]) {
            pairs.push(Pair { key, value: None });
            continue;
        }
        match bytes[i] {
            b'=' => i += 1,
            b'"' => return Err(err(i, DecodeErrorKind::QuoteInKey)),
            _ => return Err(err(i, DecodeErrorKind::ControlCharacter)),
        }
        if i < bytes.len() && bytes[i] == b'"' {
            let (value, end) = parse_quoted(text, i)?;
            i = end;
            if i < bytes.len() && !is_separator(bytes[i]) {
                return Err(err(i, DecodeErrorKind::MissingSeparator));
            }
            pairs.push(Pair {
                key,
                value: Some(value),
            });
        } else {
            let value_start = i;
            while i < bytes.len() && !is_separator(bytes[i]) {
                match bytes[i] {
                    b'"' => return Err(err(i, DecodeErrorKind::QuoteInBareValue)),
                    b'=' => return Err(err(i, DecodeErrorKind::EqualsInBareValue)),
                    b if b < b' ' || b == 0x7f => {
                        return Err(err(i, DecodeErrorKind::ControlCharacter));
                    }
                    _ => i += 1,
                }
            }
            pairs.push(Pair {
                key,
                value: Some(Cow::Borrowed(&text[value_start..i])),
            });
        }
    }
}

/// Parses a quoted value starting at the opening quote `open`. Returns the value and the
/// offset just after the closing quote.
fn parse_quoted(text: &str, open: usize) -> Result<(Cow<'_, str>, usize), DecodeError> {
    let bytes = text.as_bytes();
    let start = open + 1;
    let mut i = start;
    // Fast path: no escapes, borrow. Quoted values (messages) are most of the bytes of a
    // typical line, so the scan for the closing quote uses memchr's vectorised search.
    i += memchr::memchr2(b'"', b'\\', &bytes[i..]).unwrap_or(bytes.len() - i);
    if i >= bytes.len() {
        return Err(err(open, DecodeErrorKind::UnterminatedQuote));
    }
    if bytes[i] == b'"' {
        return Ok((Cow::Borrowed(&text[start..i]), i + 1));
    }
    let mut out = String::with_capacity(i - start + 16);
    out.push_str(&text[start..i]);
    loop {
        if i >= bytes.len() {
            return Err(err(open, DecodeErrorKind::UnterminatedQuote));
        }
        match bytes[i] {
            b'"' => return Ok((Cow::Owned(out), i + 1)),
            b'\\' => {
                let esc = i;
                let Some(&e) = bytes.get(i + 1) else {
                    return Err(err(open, DecodeErrorKind::UnterminatedQuote));
                };
                i += 2;
                match e {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'u' => {
                        let (c, next) = parse_unicode_escape(bytes, i, esc)?;
                        out.push(c);
                        i = next;
                    }
                    _ => return Err(err(esc, DecodeErrorKind::BadEscape)),
                }
            }
            _ => {
                let run_start = i;
                i += memchr::memchr2(b'"', b'\\', &bytes[i..]).unwrap_or(bytes.len() - i);
                out.push_str(&text[run_start..i]);
            }
        }
    }
}

fn hex4(bytes: &[u8], at: usize, esc: usize) -> Result<u32, DecodeError> {
    let digits = bytes
        .get(at..at + 4)
        .ok_or(err(esc, DecodeErrorKind::BadEscape))?;
    let mut v = 0u32;
    for &d in digits {
        let n = (d as char)
            .to_digit(16)
            .ok_or(err(esc, DecodeErrorKind::BadEscape))?;
        v = v * 16 + n;
    }
    Ok(v)
}

/// Reads the `XXXX` of `\uXXXX` at `at` (and a low surrogate's `\uXXXX` after a high one).
fn parse_unicode_escape(bytes: &[u8], at: usize, esc: usize) -> Result<(char, usize), DecodeError> {
    let first = hex4(bytes, at, esc)?;
    if (0xD800..0xDC00).contains(&first) {
        if bytes.get(at + 4..at + 6) != Some(b"\\u") {
            return Err(err(esc, DecodeErrorKind::BadEscape));
        }
        let second = hex4(bytes, at + 6, esc)?;
        if !(0xDC00..0xE000).contains(&second) {
            return Err(err(esc, DecodeErrorKind::BadEscape));
        }
        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        let c = char::from_u32(code).ok_or(err(esc, DecodeErrorKind::BadEscape))?;
        return Ok((c, at + 10));
    }
    let c = char::from_u32(first).ok_or(err(esc, DecodeErrorKind::BadEscape))?;
    Ok((c, at + 4))
}

/// Settings of the lenient reader.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Lines longer than this many bytes are cut and flagged `truncated=true`.
    pub max_line_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 * 1024,
        }
    }
}

/// What the lenient reader had to do to a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFlags {
    /// The line looked like logfmt but did not parse; it was kept as `msg`.
    pub parse_error: bool,
    /// The line was longer than the limit and was cut.
    pub truncated: bool,
    /// The line held bytes that are not UTF-8; they were replaced with U+FFFD.
    pub invalid_utf8: bool,
    /// The line was read as logfmt pairs (otherwise it is plain text in `msg`).
    pub logfmt: bool,
}

/// Reads one line into an event, never failing and never losing a byte.
///
/// A line is read as logfmt when it parses strictly, its first pair has a value and at
/// least half of its pairs have values. Any other line becomes one event whose `msg` is the
/// whole line; a line whose first pair has a value but that fails to parse is also flagged
/// `parse_error=true`. Invalid UTF-8 is replaced and flagged `invalid_utf8=true`; a line over
/// the limit is cut and flagged `truncated=true`. A trailing `\n` and `\r` are stripped.
pub fn read_line(line: &[u8], options: &ReadOptions) -> (Event, LineFlags) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut flags = LineFlags::default();
    let text: Cow<'_, str> = match std::str::from_utf8(line) {
        Ok(t) => {
            if t.len() > options.max_line_bytes {
                flags.truncated = true;
                Cow::Borrowed(&t[..floor_char_boundary(t, options.max_line_bytes)])
            } else {
                Cow::Borrowed(t)
            }
        }
        Err(_) => {
            flags.invalid_utf8 = true;
            let cut = if line.len() > options.max_line_bytes {
                flags.truncated = true;
                &line[..options.max_line_bytes]
            } else {
                line
            };
            Cow::Owned(String::from_utf8_lossy(cut).into_owned())
        }
    };
    let mut event = Event::new();
    match parse_strict(text.as_bytes()) {
        Ok(pairs) if looks_like_logfmt(&pairs) => {
            flags.logfmt = true;
            for p in pairs {
                let value = p
                    .value
                    .map(Cow::into_owned)
                    .unwrap_or_else(|| "true".to_string());
                event.push(p.key, value);
            }
        }
        Ok(_) => event.push(keys::MSG, text.as_ref()),
        Err(_) => {
            flags.parse_error = first_pair_has_value(text.as_bytes());
            event.push(keys::MSG, text.as_ref());
        }
    }
    if flags.parse_error {
        event.push(keys::PARSE_ERROR, "true");
    }
    if flags.truncated {
        event.push(keys::TRUNCATED, "true");
    }
    if flags.invalid_utf8 {
        event.push(keys::INVALID_UTF8, "true");
    }
    (event, flags)
}

fn looks_like_logfmt(pairs: &[Pair<'_>]) -> bool {
    let Some(first) = pairs.first() else {
        return false;
    };
    let with_values = pairs.iter().filter(|p| p.value.is_some()).count();
    first.value.is_some() && with_values * 2 >= pairs.len()
}

/// Whether the line opens with `key=`, the sign that it was meant as logfmt.
fn first_pair_has_value(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() && is_separator(bytes[i]) {
        i += 1;
    }
    let key_start = i;
    while i < bytes.len() && bytes[i] > b' ' && bytes[i] != b'=' && bytes[i] != b'"' {
        i += 1;
    }
    i > key_start && bytes.get(i) == Some(&b'=')
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}
