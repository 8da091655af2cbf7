//! Conformance table for the codec, and property tests of its round trip.

use proptest::prelude::*;

use super::*;
use crate::event::Event;

/// Expected result of a strict parse: pairs (value `None` = bare key) or an error.
enum Want<'a> {
    Pairs(&'a [(&'a str, Option<&'a str>)]),
    Error(usize, DecodeErrorKind),
}
use DecodeErrorKind as K;
use Want::{Error as E, Pairs as P};

#[track_caller]
fn check(input: &[u8], want: &Want<'_>) {
    let got = parse_strict(input);
    match want {
        P(expected) => {
            let pairs = got.unwrap_or_else(|e| panic!("{input:?}: unexpected error {e}"));
            let got: Vec<(&str, Option<&str>)> =
                pairs.iter().map(|p| (p.key, p.value.as_deref())).collect();
            assert_eq!(got, *expected, "input {:?}", String::from_utf8_lossy(input));
        }
        E(position, kind) => {
            let e = got.expect_err(&format!("{input:?} should fail"));
            assert_eq!(
                (e.position, e.kind),
                (*position, *kind),
                "input {input:?}: {e}"
            );
        }
    }
}

const CASES: &[(&[u8], Want<'static>)] = &[
    // empty input and separators
    (b"", P(&[])),
    (b"   \t ", P(&[])),
    (b"\r", P(&[])),
    (b"\n", P(&[])),
    // simple pairs
    (b"a=1", P(&[("a", Some("1"))])),
    (b"a=1 b=2", P(&[("a", Some("1")), ("b", Some("2"))])),
    (b"a=1\tb=2", P(&[("a", Some("1")), ("b", Some("2"))])),
    (b"  a=1   b=2  ", P(&[("a", Some("1")), ("b", Some("2"))])),
    (
        b"a=1 \t\t b=2\r\n",
        P(&[("a", Some("1")), ("b", Some("2"))]),
    ),
    (b"a=1\r", P(&[("a", Some("1"))])),
    // empty values and bare keys
    (b"a=", P(&[("a", Some(""))])),
    (b"a= b=", P(&[("a", Some("")), ("b", Some(""))])),
    (b"a=\"\"", P(&[("a", Some(""))])),
    (b"flag", P(&[("flag", None)])),
    (
        b"a=1 flag b=2",
        P(&[("a", Some("1")), ("flag", None), ("b", Some("2"))]),
    ),
    (b"x y z", P(&[("x", None), ("y", None), ("z", None)])),
    // quoted values and every escape
    (b"msg=\"hello world\"", P(&[("msg", Some("hello world"))])),
    (b"m=\"a=b\"", P(&[("m", Some("a=b"))])),
    (b"m=\"say \\\"hi\\\"\"", P(&[("m", Some("say \"hi\""))])),
    (b"m=\"back\\\\slash\"", P(&[("m", Some("back\\slash"))])),
    (b"m=\"a\\nb\"", P(&[("m", Some("a\nb"))])),
    (b"m=\"a\\rb\"", P(&[("m", Some("a\rb"))])),
    (b"m=\"a\\tb\"", P(&[("m", Some("a\tb"))])),
    (b"m=\"a\\/b\"", P(&[("m", Some("a/b"))])),
    (b"m=\"a\\bb\"", P(&[("m", Some("a\u{8}b"))])),
    (b"m=\"a\\fb\"", P(&[("m", Some("a\u{c}b"))])),
    (b"m=\"\\u0007\"", P(&[("m", Some("\u{7}"))])),
    (b"m=\"\\u00e9\"", P(&[("m", Some("\u{e9}"))])),
    (b"m=\"\\u00E9\"", P(&[("m", Some("\u{e9}"))])),
    (b"m=\"\\u2028\"", P(&[("m", Some("\u{2028}"))])),
    (b"m=\"\\ud83d\\ude00\"", P(&[("m", Some("\u{1F600}"))])),
    (b"m=\"tab\there\"", P(&[("m", Some("tab\there"))])),
    (b"m=\"x\" n=\"y\"", P(&[("m", Some("x")), ("n", Some("y"))])),
    // unicode keys and values
    ("ключ=значение".as_bytes(), P(&[("ключ", Some("значение"))])),
    (
        "emoji=😀 k=✓".as_bytes(),
        P(&[("emoji", Some("😀")), ("k", Some("✓"))]),
    ),
    ("m=\"日本 語\"".as_bytes(), P(&[("m", Some("日本 語"))])),
    ("ü=1".as_bytes(), P(&[("ü", Some("1"))])),
    ("k=\u{a0}x".as_bytes(), P(&[("k", Some("\u{a0}x"))])),
    // duplicates kept in order
    (b"a=1 a=2", P(&[("a", Some("1")), ("a", Some("2"))])),
    (b"a a", P(&[("a", None), ("a", None)])),
    // odd but valid
    (b"a.b-c/d:e=1", P(&[("a.b-c/d:e", Some("1"))])),
    (b"k=v\\n", P(&[("k", Some("v\\n"))])),
    (b"url=http://x/y?q", P(&[("url", Some("http://x/y?q"))])),
    (b"k=-1.5e3", P(&[("k", Some("-1.5e3"))])),
    (b"k=[]{}()", P(&[("k", Some("[]{}()"))])),
    // syntax errors, with their positions
    (b"=bar", E(0, K::EqualsWithoutKey)),
    (b"a=1 =bar", E(4, K::EqualsWithoutKey)),
    (b"a==", E(2, K::EqualsInBareValue)),
    (b"k=a=b", E(3, K::EqualsInBareValue)),
    (b"k=b\"ar", E(3, K::QuoteInBareValue)),
    (b"k=\"unterminated", E(2, K::UnterminatedQuote)),
    (b"a=1 k=\"open", E(6, K::UnterminatedQuote)),
    (b"k=\"ends in backslash\\", E(2, K::UnterminatedQuote)),
    (b"k=\"\\u1\"", E(3, K::BadEscape)),
    (b"k=\"\\uZZZZ\"", E(3, K::BadEscape)),
    (b"k=\"\\x41\"", E(3, K::BadEscape)),
    (b"k=\"\\ud83d\"", E(3, K::BadEscape)),
    (b"k=\"\\udc00\\u0041\"", E(3, K::BadEscape)),
    (b"\"k\"=v", E(0, K::QuoteInKey)),
    (b"ke\"y=v", E(2, K::QuoteInKey)),
    (b"k=\"v\"x", E(5, K::MissingSeparator)),
    (b"k=v\x01", E(3, K::ControlCharacter)),
    (b"k=v\x7f", E(3, K::ControlCharacter)),
    (b"\x01k=v", E(0, K::ControlCharacter)),
    (b"k=\xff", E(2, K::InvalidUtf8)),
    (b"a=1 \xc3\x28=2", E(4, K::InvalidUtf8)),
];

#[test]
fn conformance_table() {
    assert!(CASES.len() >= 60, "the table must keep at least 60 cases");
    for (input, want) in CASES {
        check(input, want);
    }
}

#[test]
fn multi_line_input_is_read_line_by_line() {
    let input = b"a=1 b=2\r\nplain text here\nk=\"open\n\nc=3";
    let lines: Vec<_> = input
        .split(|&b| b == b'\n')
        .map(|l| read_line(l, &ReadOptions::default()))
        .collect();
    let encoded: Vec<String> = lines.iter().map(|(e, _)| e.to_line()).collect();
    assert_eq!(
        encoded,
        [
            "a=1 b=2",
            "msg=\"plain text here\"",
            "msg=\"k=\\\"open\" parse_error=true",
            "msg=",
            "c=3",
        ]
    );
}

#[test]
fn lenient_reader_keeps_every_byte() {
    let opts = ReadOptions::default();
    // plain text: bare words are not logfmt
    let (e, f) = read_line(b"Invalid user webmaster from 173.234.31.186", &opts);
    assert!(!f.logfmt && !f.parse_error);
    assert_eq!(
        e.get("msg"),
        Some("Invalid user webmaster from 173.234.31.186")
    );
    // first pair has a value but fewer than half do: plain text, no parse error
    let (e, f) = read_line(b"uid=0 is the root user here", &opts);
    assert!(!f.logfmt && !f.parse_error);
    assert_eq!(e.get("msg"), Some("uid=0 is the root user here"));
    // half with values is enough
    let (e, f) = read_line(b"a=1 flag", &opts);
    assert!(f.logfmt);
    assert_eq!(e.get("flag"), Some("true"));
    // looked like logfmt, failed: kept and flagged
    let (e, f) = read_line(b"level=error msg=\"unterminated", &opts);
    assert!(f.parse_error);
    assert_eq!(e.get("msg"), Some("level=error msg=\"unterminated"));
    assert_eq!(e.get("parse_error"), Some("true"));
    // invalid UTF-8 is replaced and flagged; the line is still logfmt
    let (e, f) = read_line(b"level=info msg=caf\xe9", &opts);
    assert!(f.invalid_utf8 && f.logfmt);
    assert_eq!(e.get("msg"), Some("caf\u{fffd}"));
    assert_eq!(e.get("invalid_utf8"), Some("true"));
    // huge lines are cut at a char boundary and flagged
    let small = ReadOptions { max_line_bytes: 10 };
    let (e, f) = read_line("ééééééééé".as_bytes(), &small);
    assert!(f.truncated);
    assert_eq!(e.get("msg"), Some("ééééé"));
    assert_eq!(e.get("truncated"), Some("true"));
    // CRLF
    let (e, _) = read_line(b"a=1\r\n", &opts);
    assert_eq!(e.get("a"), Some("1"));
}

#[test]
fn encoder_output_of_awkward_values_parses_back() {
    let values = [
        "",
        " ",
        "=",
        "\"",
        "\\",
        "\\\"",
        "a b",
        "\n\r\t",
        "\u{0}\u{1f}\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{2028}\u{2029}",
        "😀",
        "ends with \\",
        "true",
        "-",
    ];
    for v in values {
        let line = encode_pairs([("k", v)]);
        let pairs = parse_strict(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(pairs.len(), 1, "{line}");
        assert_eq!(pairs[0].value_str(), v, "{line}");
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    // Keys hold any character above space except `=` and `"` and Unicode spaces.
    proptest::string::string_regex("[a-zA-Z0-9_.:/@ü中😀-]{1,12}").expect("valid regex")
}

proptest! {
    #[test]
    fn any_pairs_round_trip(pairs in proptest::collection::vec((key_strategy(), any::<String>()), 0..8)) {
        let line = encode_pairs(pairs.iter().map(|(k, v)| (k, v)));
        let decoded = parse_strict(line.as_bytes()).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        let got: Vec<(String, String)> =
            decoded.iter().map(|p| (p.key.to_string(), p.value_str().to_string())).collect();
        prop_assert_eq!(got, pairs);
    }

    #[test]
    fn events_round_trip_through_lines(pairs in proptest::collection::vec((key_strategy(), "[a-z =\"\\\\\n]{0,10}"), 1..8)) {
        let event: Event = pairs.iter().cloned().collect();
        let line = event.to_line();
        let (back, flags) = read_line(line.as_bytes(), &ReadOptions::default());
        prop_assert!(flags.logfmt, "{}", line);
        prop_assert_eq!(back.to_line(), line);
    }

    #[test]
    fn lenient_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (event, _) = read_line(&bytes, &ReadOptions { max_line_bytes: 200 });
        prop_assert!(!event.is_empty());
    }
}
