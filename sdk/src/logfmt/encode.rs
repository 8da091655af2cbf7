//! logfmt encoder: writes pairs that parse back to themselves.

/// Whether `c` is kept in a key. Keys cannot hold spaces, `=`, `"`, control characters,
/// or the Unicode spaces and line separators, since any of them would break the line.
fn is_key_char(c: char) -> bool {
    c > ' ' && c != '=' && c != '"' && !c.is_control() && !c.is_whitespace()
}

fn char_needs_quoting(c: char) -> bool {
    c == ' ' || c == '=' || c == '"' || c.is_control() || c.is_whitespace() || c == '\\'
}

/// [`char_needs_quoting`] for an ASCII byte: space and below, `=`, `"`, `\\`, DEL.
fn ascii_needs_quoting(b: u8) -> bool {
    b <= b' ' || b == b'=' || b == b'"' || b == b'\\' || b == 0x7f
}

/// Whether a value must be double-quoted to survive a round trip.
///
/// This runs for every value of every event on the task's thread, so ASCII is checked a
/// byte at a time without decoding characters; from the first non-ASCII byte on, the
/// rest is checked by character (Unicode whitespace and C1 controls need quotes too).
pub fn needs_quoting(value: &str) -> bool {
    for (i, &b) in value.as_bytes().iter().enumerate() {
        if b >= 0x80 {
            // Every byte before `i` was ASCII, so `i` is a character boundary.
            return value[i..].chars().any(char_needs_quoting);
        }
        if ascii_needs_quoting(b) {
            return true;
        }
    }
    false
}

/// Appends `key`, dropping the characters a key cannot hold. A key left empty is written
/// as `_`, so the line stays parseable.
pub fn write_key(out: &mut String, key: &str) {
    // The common case, a plain ASCII name, is copied whole.
    if !key.is_empty() && key.bytes().all(|b| b < 0x80 && !ascii_needs_quoting(b)) {
        out.push_str(key);
        return;
    }
    let start = out.len();
    out.extend(key.chars().filter(|&c| is_key_char(c)));
    if out.len() == start {
        out.push('_');
    }
}

/// Appends `value`, quoted and escaped when it needs to be. An empty value is written as
/// nothing (`key=`).
pub fn write_value(out: &mut String, value: &str) {
    if !needs_quoting(value) {
        out.push_str(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push('"');
    // Byte by byte while ASCII (the common case), a character at a time otherwise; runs
    // that need no escape are copied whole.
    let bytes = value.as_bytes();
    let mut plain_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b >= 0x80 {
            // `i` is a character boundary: every step so far was a whole character.
            let Some(c) = value[i..].chars().next() else {
                break;
            };
            let len = c.len_utf8();
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                out.push_str(&value[plain_from..i]);
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
                plain_from = i + len;
            }
            i += len;
            continue;
        }
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            _ => None,
        };
        if escape.is_some() || b < 0x20 || b == 0x7f {
            out.push_str(&value[plain_from..i]);
            match escape {
                Some(e) => out.push_str(e),
                None => {
                    use std::fmt::Write as _;
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{:04x}", b);
                }
            }
            plain_from = i + 1;
        }
        i += 1;
    }
    out.push_str(&value[plain_from..]);
    out.push('"');
}

/// Appends one `key=value` pair, with a separating space when `out` is not empty.
pub fn write_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    write_key(out, key);
    out.push('=');
    write_value(out, value);
}

/// Encodes pairs as one logfmt line, without the trailing newline.
pub fn encode_pairs<'a, I, K, V>(pairs: I) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str> + 'a,
    V: AsRef<str> + 'a,
{
    let mut out = String::new();
    for (k, v) in pairs {
        write_pair(&mut out, k.as_ref(), v.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(key: &str, value: &str, expected: &str) {
        assert_eq!(encode_pairs([(key, value)]), expected);
    }

    #[test]
    fn quotes_only_when_needed() {
        check("k", "plain", "k=plain");
        check("k", "", "k=");
        check("k", "two words", "k=\"two words\"");
        check("k", "a=b", "k=\"a=b\"");
        check("k", "say \"hi\"", "k=\"say \\\"hi\\\"\"");
        check("k", "back\\slash", "k=\"back\\\\slash\"");
        check("k", "line\nbreak", "k=\"line\\nbreak\"");
        check("k", "cr\rtab\t", "k=\"cr\\rtab\\t\"");
        check("k", "bell\u{7}", "k=\"bell\\u0007\"");
        check("k", "del\u{7f}", "k=\"del\\u007f\"");
        check("k", "nel\u{85}", "k=\"nel\\u0085\"");
        check("k", "nbsp\u{a0}x", "k=\"nbsp\u{a0}x\"");
        check("k", "ls\u{2028}ps\u{2029}", "k=\"ls\\u2028ps\\u2029\"");
        check("k", "ünïcödé→✓", "k=ünïcödé→✓");
    }

    #[test]
    fn drops_what_a_key_cannot_hold() {
        check("a b=c\"d\n", "v", "abcd=v");
        check("ключ", "v", "ключ=v");
        check(" = ", "v", "_=v");
        check("nb\u{a0}sp", "v", "nbsp=v");
    }

    #[test]
    fn separates_pairs_with_one_space() {
        assert_eq!(encode_pairs([("a", "1"), ("b", "x y")]), "a=1 b=\"x y\"");
    }
}
