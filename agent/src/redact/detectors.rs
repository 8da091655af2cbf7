//! The built-in detectors: a pattern for the one-pass [`regex::RegexSet`] and, where a
//! pattern alone would match too much, a check of the candidate (Luhn for cards, number
//! ranges for SSNs, a real parse for IPv6, what surrounds the match).
//!
//! The `regex` crate has no look-around, so boundaries that `\b` cannot express (a card
//! number must not be part of a longer run like `blk_-4608…`) are checked on the bytes
//! around the match.

use super::rules::Detectors;

/// Checks a candidate match (the whole value and the match's byte range) and gives the
/// range to redact, which may be shorter (a card number followed by another number).
pub(crate) type Check = fn(&str, usize, usize) -> Option<(usize, usize)>;

/// One built-in detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    pub(crate) pattern: &'static str,
    pub(crate) check: Option<Check>,
}

const CARD: Builtin = Builtin {
    name: "card",
    // 13-19 digits, the first 3-6 (Amex, Visa, Mastercard, Discover, JCB…), single spaces
    // or dashes between digits allowed.
    pattern: r"\b[3-6](?:[ -]?[0-9]){12,18}\b",
    check: Some(check_card),
};
const EMAIL: Builtin = Builtin {
    name: "email",
    pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    check: None,
};
const AWS_ACCESS_KEY: Builtin = Builtin {
    name: "aws_access_key",
    pattern: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    check: None,
};
const AWS_SECRET_KEY: Builtin = Builtin {
    name: "aws_secret_key",
    pattern: r#"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
    check: None,
};
const GITHUB_TOKEN: Builtin = Builtin {
    name: "github_token",
    pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
    check: None,
};
const JWT: Builtin = Builtin {
    name: "jwt",
    pattern: r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}",
    check: None,
};
const AUTHORIZATION: Builtin = Builtin {
    name: "authorization",
    pattern: r#"(?i:authorization)["']?\s*[:=]\s*["']?(?i:bearer|basic)\s+([A-Za-z0-9._~+/-]+=*)|(?i:bearer)\s+([A-Za-z0-9._~+/-]{16,}=*)"#,
    check: None,
};
const PRIVATE_KEY: Builtin = Builtin {
    name: "private_key",
    pattern: r"(?s)-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|$)",
    check: None,
};
const URL_PASSWORD: Builtin = Builtin {
    name: "url_password",
    pattern: r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@",
    check: None,
};
const SSN: Builtin = Builtin {
    name: "ssn",
    pattern: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
    check: Some(check_ssn),
};
const IPV4: Builtin = Builtin {
    name: "ip",
    // Kept small for the set's DFA (every digit run starts a candidate); the check does
    // the octet ranges.
    pattern: r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
    check: Some(check_ipv4),
};
const IPV6: Builtin = Builtin {
    name: "ip",
    // Loose on purpose (a small DFA); the check parses the candidate.
    // The full form (8 groups) or a compressed one with `::`, so times like `12:34:56`
    // are no candidates.
    pattern: r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|[0-9A-Fa-f:]*::[0-9A-Fa-f:]*[0-9A-Fa-f]",
    check: Some(check_ipv6),
};

/// The enabled built-ins with their actions, in priority order (see [`super`]).
pub(crate) fn enabled(d: &Detectors) -> Vec<(Builtin, super::rules::Action)> {
    [
        (URL_PASSWORD, d.url_password),
        (CARD, d.card),
        (EMAIL, d.email),
        (AWS_ACCESS_KEY, d.aws_access_key),
        (AWS_SECRET_KEY, d.aws_secret_key),
        (GITHUB_TOKEN, d.github_token),
        (JWT, d.jwt),
        (AUTHORIZATION, d.authorization),
        (PRIVATE_KEY, d.private_key),
        (SSN, d.ssn),
        (IPV4, d.ip),
        (IPV6, d.ip),
    ]
    .into_iter()
    .filter_map(|(b, s)| s.action().map(|a| (b, a)))
    .collect()
}

/// The pattern redacting `name=value` / `name: value` in text for the field names.
pub(crate) fn field_in_text_pattern(fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let names: Vec<String> = fields.iter().map(|f| regex::escape(f)).collect();
    Some(format!(
        r#"(?i)(?:^|[^A-Za-z0-9])(?:{})["']?\s*[=:]\s*["']?([^\s"'&,;]+)"#,
        names.join("|")
    ))
}

fn byte_before(v: &str, start: usize) -> Option<u8> {
    start.checked_sub(1).map(|i| v.as_bytes()[i])
}

fn byte_after(v: &str, end: usize) -> Option<u8> {
    v.as_bytes().get(end).copied()
}

fn check_card(v: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let joined =
        |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if joined(byte_before(v, start)) {
        return None;
    }
    // A dot after is a full stop unless a digit follows (`4111….5` is a decimal).
    let dot_number = byte_after(v, end) == Some(b'.')
        && byte_after(v, end + 1).is_some_and(|b| b.is_ascii_digit());
    let after_ok = !joined(byte_after(v, end).filter(|&b| b != b'.')) && !dot_number;
    let m = &v[start..end];
    let sep = match (m.contains(' '), m.contains('-')) {
        (false, false) => {
            let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
            return (after_ok && (13..=19).contains(&digits.len()) && luhn(&digits))
                .then_some((start, end));
        }
        (true, false) => ' ',
        (false, true) => '-',
        (true, true) => return None,
    };
    // Grouped: 4-4-4-4[-1..3] or Amex/Diners 4-6-5 / 4-6-4. Trailing groups that are
    // another number are trimmed until what is left is a card.
    let groups: Vec<&str> = m.split(sep).collect();
    for k in (1..=groups.len()).rev() {
        let g = &groups[..k];
        let lens: Vec<usize> = g.iter().map(|s| s.len()).collect();
        let shaped = lens == [4, 6, 5]
            || lens == [4, 6, 4]
            || (lens.len() >= 4
                && lens[..lens.len() - 1].iter().all(|&l| l == 4)
                && (1..=4).contains(&lens[lens.len() - 1]));
        if !shaped || (k == groups.len() && !after_ok) {
            continue;
        }
        let digits: Vec<u32> = g
            .iter()
            .flat_map(|s| s.chars())
            .filter_map(|c| c.to_digit(10))
            .collect();
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            let len = lens.iter().sum::<usize>() + k - 1;
            return Some((start, start + len));
        }
    }
    None
}

/// The Luhn checksum over digits, most significant first.
pub(crate) fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn check_ssn(v: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let joined = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit() || b == b'-');
    if joined(byte_before(v, start)) || joined(byte_after(v, end)) {
        return None;
    }
    let m = &v[start..end];
    let (area, group, serial) = (&m[0..3], &m[4..6], &m[7..11]);
    (area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000")
        .then_some((start, end))
}

fn check_ipv4(v: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let joined = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit() || b == b'.');
    let octets_ok = v[start..end]
        .split('.')
        .all(|o| o.parse::<u8>().is_ok() && (o.len() == 1 || !o.starts_with('0')));
    (octets_ok && !(joined(byte_before(v, start)) || joined(byte_after(v, end))))
        .then_some((start, end))
}

fn check_ipv6(v: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let joined = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit() || b == b':');
    if joined(byte_before(v, start)) || joined(byte_after(v, end)) {
        return None;
    }
    let m = &v[start..end];
    (m.bytes().filter(u8::is_ascii_hexdigit).count() >= 3
        && m.parse::<std::net::Ipv6Addr>().is_ok())
    .then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// The redacted spans of `detector` in `text`.
    fn found(detector: Builtin, text: &str) -> Vec<String> {
        let re = Regex::new(detector.pattern).unwrap();
        let mut out = Vec::new();
        for caps in re.captures_iter(text) {
            let m = (1..caps.len())
                .find_map(|i| caps.get(i))
                .or_else(|| caps.get(0))
                .unwrap();
            let whole = caps.get(0).unwrap();
            match detector.check {
                None => out.push(m.as_str().to_string()),
                Some(c) => {
                    if let Some((s, e)) = c(text, whole.start(), whole.end()) {
                        out.push(text[s..e].to_string());
                    }
                }
            }
        }
        out
    }

    #[track_caller]
    fn hits(detector: Builtin, text: &str, expected: &[&str]) {
        assert_eq!(
            found(detector, text),
            expected,
            "{} in {text:?}",
            detector.name
        );
    }

    #[track_caller]
    fn misses(detector: Builtin, text: &str) {
        hits(detector, text, &[]);
    }

    #[test]
    fn cards() {
        hits(CARD, "paid with 4111111111111111 ok", &["4111111111111111"]);
        hits(CARD, "card=4111-1111-1111-1111", &["4111-1111-1111-1111"]);
        hits(CARD, "amex 3782 822463 10005.", &["3782 822463 10005"]);
        hits(CARD, "5555 5555 5555 4444", &["5555 5555 5555 4444"]);
        misses(CARD, "paid with 4111111111111112 ok");
        misses(CARD, "blk_-4608999687919862906 served");
        misses(CARD, "ts 1700000000000 ms");
        misses(CARD, "4111-1111 1111-1111");
        misses(CARD, "order 411111111111");
        misses(CARD, "id=4111111111111111x");
        hits(
            CARD,
            "4111 1111 1111 1111 12 items",
            &["4111 1111 1111 1111"],
        );
        misses(CARD, "REPORT : 7024 5015 150454 240");
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }

    #[test]
    fn emails() {
        hits(
            EMAIL,
            "from alice.smith+x@example.co.uk:",
            &["alice.smith+x@example.co.uk"],
        );
        misses(EMAIL, "user@localhost");
        misses(EMAIL, "a @ b.com and x@y");
    }

    #[test]
    fn aws_keys() {
        hits(
            AWS_ACCESS_KEY,
            "key AKIAIOSFODNN7EXAMPLE used",
            &["AKIAIOSFODNN7EXAMPLE"],
        );
        hits(
            AWS_ACCESS_KEY,
            "ASIAY34FZKBOKMUTVV7A",
            &["ASIAY34FZKBOKMUTVV7A"],
        );
        misses(AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPL");
        misses(AWS_ACCESS_KEY, "XAKIAIOSFODNN7EXAMPLE");
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        hits(
            AWS_SECRET_KEY,
            &format!("aws_secret_access_key = {secret}"),
            &[secret],
        );
        hits(
            AWS_SECRET_KEY,
            &format!("AWS_SECRET_KEY: \"{secret}\""),
            &[secret],
        );
        misses(AWS_SECRET_KEY, &format!("commit {secret}"));
        misses(AWS_SECRET_KEY, "aws_secret_access_key=short");
    }

    #[test]
    fn github_tokens() {
        let t = format!("ghp_{}", "a1B2".repeat(9));
        hits(GITHUB_TOKEN, &format!("token {t} here"), &[t.as_str()]);
        let t = format!("github_pat_11ABCDEFG0{}", "x_Y1".repeat(15));
        hits(GITHUB_TOKEN, &t, &[t.as_str()]);
        hits(
            GITHUB_TOKEN,
            &format!("gho_{}", "Z".repeat(36)),
            &[&format!("gho_{}", "Z".repeat(36))],
        );
        misses(GITHUB_TOKEN, "ghp_short");
        misses(GITHUB_TOKEN, "ghx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    }

    #[test]
    fn jwts() {
        let t =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        hits(JWT, &format!("jwt={t}"), &[t]);
        misses(JWT, "eyJhbGciOiJIUzI1NiJ9 alone");
        misses(JWT, "a.b.c");
    }

    #[test]
    fn authorization_values() {
        hits(
            AUTHORIZATION,
            "Authorization: Basic dXNlcjpwYXNz",
            &["dXNlcjpwYXNz"],
        );
        hits(
            AUTHORIZATION,
            "authorization=\"Bearer abc.def.ghi\"",
            &["abc.def.ghi"],
        );
        hits(
            AUTHORIZATION,
            "sent bearer 0123456789abcdefXYZ",
            &["0123456789abcdefXYZ"],
        );
        misses(AUTHORIZATION, "basic configuration loaded");
        misses(AUTHORIZATION, "the bearer of bad news");
    }

    #[test]
    fn private_keys() {
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        hits(PRIVATE_KEY, &format!("key:\n{pem}\nafter"), &[pem]);
        hits(
            PRIVATE_KEY,
            "-----BEGIN PRIVATE KEY-----\nMIIEvQ cut",
            &["-----BEGIN PRIVATE KEY-----\nMIIEvQ cut"],
        );
        misses(
            PRIVATE_KEY,
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        );
    }

    #[test]
    fn url_passwords() {
        hits(
            URL_PASSWORD,
            "db postgres://app:s3cr%21t@db:5432/x",
            &["s3cr%21t"],
        );
        hits(URL_PASSWORD, "https://u:p@h.example", &["p"]);
        misses(URL_PASSWORD, "https://example.com:8443/path");
        misses(URL_PASSWORD, "mailto:user@example.com");
    }

    #[test]
    fn ssns() {
        hits(SSN, "ssn 123-45-6789.", &["123-45-6789"]);
        misses(SSN, "ssn 000-45-6789");
        misses(SSN, "ssn 666-45-6789");
        misses(SSN, "ssn 923-45-6789");
        misses(SSN, "ssn 123-00-6789");
        misses(SSN, "id 1-123-45-6789");
        misses(SSN, "date 2026-11-30");
    }

    #[test]
    fn ips() {
        hits(IPV4, "from 10.0.0.5 port", &["10.0.0.5"]);
        misses(IPV4, "version 1.2.3.4.5");
        misses(IPV4, "999.1.1.1");
        hits(IPV6, "from 2001:db8::1 port", &["2001:db8::1"]);
        hits(
            IPV6,
            "fe80:0:0:0:202:b3ff:fe1e:8329",
            &["fe80:0:0:0:202:b3ff:fe1e:8329"],
        );
        misses(IPV6, "at 12:34:56 today");
        misses(IPV6, "std::fmt");
    }

    #[test]
    fn field_names_in_text() {
        let re =
            Regex::new(&field_in_text_pattern(&["password".into(), "api_key".into()]).unwrap())
                .unwrap();
        let caps = re
            .captures("login failed password=hunter2 user=bob")
            .unwrap();
        assert_eq!(&caps[1], "hunter2");
        let caps = re.captures("API_KEY: \"abc123\"").unwrap();
        assert_eq!(&caps[1], "abc123");
        assert!(re.captures("passwords were rotated").is_none());
    }
}
