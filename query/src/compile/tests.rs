//! Compiles queries and runs them against a small in-RAM index of hand-made events.
#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failure report.

use tantivy::collector::Count;
use tantivy::schema::OwnedValue;
use tantivy::{DateTime, Index, IndexWriter, Searcher, TantivyDocument};

use super::*;
use crate::parse::parse_query;
use crate::schema::{json_value_for, register_tokenizers};

const EVENTS: &[&[(&str, &str)]] = &[
    /* seq 1 */
    &[
        ("level", "info"),
        ("msg", "Failed password for root from 10.0.0.5"),
        ("task", "sshd"),
        ("host", "web-1"),
        ("latency_ms", "120"),
    ],
    /* seq 2 */
    &[
        ("level", "error"),
        ("msg", "charge failed: card declined"),
        ("task", "charge"),
        ("task_id", "dl-bar-001"),
        ("host", "web-2"),
        ("latency_ms", "250"),
    ],
    /* seq 3 */
    &[
        ("level", "warn"),
        ("msg", "slow response"),
        ("task", "charge"),
        ("host", "web-3"),
        ("latency_ms", "900.5"),
    ],
    /* seq 4 */
    &[
        ("level", "debug"),
        ("msg", "cache hit"),
        ("task", "parse_email"),
        ("host", "ip-10-0-0-5"),
        ("latency_ms", "3"),
    ],
    /* seq 5 */
    &[
        ("level", "fatal"),
        ("msg", "out of memory"),
        ("task", "parse_email"),
        ("host", "web-1"),
    ],
    /* seq 6 */
    &[
        ("level", "info"),
        ("msg", "user login"),
        ("task", "auth"),
        ("user", "alice"),
        ("url", "http://x/y"),
    ],
    /* seq 7 */
    &[
        ("level", "info"),
        ("msg", "user logout"),
        ("task", "auth"),
        ("user", "bob"),
    ],
    /* seq 8 */
    &[
        ("level", "error"),
        ("msg", "timeout talking to db"),
        ("task", "charge"),
        ("attempt", "2"),
        ("latency_ms", "-5"),
    ],
    /* seq 9 */
    &[
        ("level", "trace"),
        ("msg", "entering parse"),
        ("task", "parse_pdf"),
    ],
    /* seq 10 */
    &[
        ("level", "info"),
        ("msg", "checkpoint signed"),
        ("kind", "audit"),
    ],
    /* seq 11 */
    &[
        ("level", "warn"),
        ("msg", "Failed password audit"),
        ("kind", "audit"),
    ],
    /* seq 12 */
    &[
        ("level", "error"),
        ("msg", "charge failed permanently"),
        ("task", "charge"),
        ("kind", "deadletter"),
    ],
    /* seq 13 */
    &[
        ("level", "info"),
        ("msg", "password changed"),
        ("task", "auth"),
        ("http.status", "200"),
    ],
    /* seq 14 */
    &[
        ("level", "warn"),
        ("msg", "Failed to parse password file"),
        ("task", "parse_email"),
    ],
    /* seq 15 */
    &[("level", "info"), ("msg", "healthy"), ("task", "health")],
];

fn logfmt_line(pairs: &[(&str, &str)]) -> String {
    let mut line = String::new();
    for (k, v) in pairs {
        if !line.is_empty() {
            line.push(' ');
        }
        if v.contains([' ', '=', '"']) {
            line.push_str(&format!("{k}={v:?}"));
        } else {
            line.push_str(&format!("{k}={v}"));
        }
    }
    line
}

fn document(s: &LogSchema, seq: u64, pairs: &[(&str, &str)]) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_u64(s.seq, seq);
    doc.add_date(
        s.ts,
        DateTime::from_timestamp_nanos(1_790_000_000_000_000_000 + seq as i64),
    );
    doc.add_text(s.line, logfmt_line(pairs));
    let mut fields = serde_json::Map::new();
    for (k, v) in pairs {
        match *k {
            "msg" => doc.add_text(s.msg, v),
            "level" => {
                doc.add_text(s.level, v);
                doc.add_u64(s.level_num, level_rank(v).unwrap());
            }
            _ => match s.reserved_exact_field(k) {
                Some(f) => doc.add_text(f, v),
                None => {
                    fields.insert(k.to_string(), json_value_for(v));
                }
            },
        }
    }
    if !fields.is_empty() {
        doc.add_field_value(
            s.fields,
            &OwnedValue::from(serde_json::Value::Object(fields)),
        );
    }
    doc
}

struct Fixture {
    schema: LogSchema,
    searcher: Searcher,
}

impl Fixture {
    fn new() -> Fixture {
        let schema = LogSchema::new();
        let index = Index::create_in_ram(schema.schema.clone());
        register_tokenizers(&index);
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for (i, pairs) in EVENTS.iter().enumerate() {
            writer
                .add_document(document(&schema, i as u64 + 1, pairs))
                .unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        Fixture { schema, searcher }
    }

    fn count(&self, query: &str) -> usize {
        let parsed = parse_query(query).unwrap();
        let compiled = compile(&parsed, &self.schema)
            .unwrap_or_else(|e| panic!("{query:?} did not compile: {e}"));
        self.searcher
            .search(&compiled, &Count)
            .unwrap_or_else(|e| panic!("{query:?} failed to run: {e}"))
    }

    #[track_caller]
    fn check(&self, query: &str, expected: usize) {
        assert_eq!(self.count(query), expected, "count for {query:?}");
    }

    #[track_caller]
    fn check_err(&self, query: &str, expected: CompileError) {
        let parsed = parse_query(query).unwrap();
        match compile(&parsed, &self.schema) {
            Ok(_) => panic!("{query:?} compiled, expected {expected}"),
            Err(e) => assert_eq!(e, expected, "{query:?}"),
        }
    }
}

#[test]
fn empty_query_matches_all_but_audit() {
    let f = Fixture::new();
    f.check("", 13);
    f.check("   ", 13);
    f.check("*", 13);
}

#[test]
fn free_text_and_phrases() {
    let f = Fixture::new();
    f.check("password", 3);
    f.check("PASSWORD", 3);
    f.check("Failed password", 2);
    f.check("\"Failed password\"", 1);
    f.check("failed", 4);
    f.check("\"charge failed\"", 2);
    f.check("\"Charge, failed!\"", 2);
    // Free text also searches the raw line, so key values count.
    f.check("web", 4);
    f.check("web-1", 2);
    f.check("10.0.0.5", 2);
    f.check("nonexistent", 0);
    f.check("msg:password", 3);
    f.check("msg:\"failed password\"", 1);
    f.check("msg:pass*", 3);
    f.check("msg:\"failed pass\"*", 1);
}

#[test]
fn exact_fields() {
    let f = Fixture::new();
    f.check("level:error", 3);
    f.check("task:charge", 4);
    f.check("task:char", 0);
    f.check("task_id:dl-bar-001", 1);
    f.check("host:ip-10-0-0-5", 1);
    f.check("host:web-1", 2);
    f.check("url:http://x/y", 1);
    f.check("user:alice", 1);
    f.check("user:ALICE", 0);
    f.check("http.status:200", 1);
    f.check("kind:deadletter", 1);
}

#[test]
fn prefixes() {
    let f = Fixture::new();
    f.check("task:parse*", 4);
    f.check("task:parse_e*", 3);
    f.check("host:web*", 4);
    f.check("user:al*", 1);
    f.check("latency_ms:1*", 1);
    f.check("user:*", 2);
}

#[test]
fn numeric_ranges_on_json_fields() {
    let f = Fixture::new();
    // Both the exact string and the number match the same document.
    f.check("latency_ms:250", 1);
    f.check("latency_ms:>200", 2);
    f.check("latency_ms:>=250", 2);
    f.check("latency_ms:>250", 1);
    f.check("latency_ms:<0", 1);
    f.check("latency_ms:<=3", 2);
    f.check("latency_ms:>900", 1);
    f.check("latency_ms:>900.5", 0);
    f.check("latency_ms:[3 TO 250]", 3);
    f.check("latency_ms:{3 TO 250}", 1);
    f.check("latency_ms:[100 TO *]", 3);
    f.check("latency_ms:[* TO *]", 5);
    f.check("attempt:>1", 1);
    f.check("user:>1", 0);
    f.check("nosuchfield:>1", 0);
}

#[test]
fn seq_ranges() {
    let f = Fixture::new();
    f.check("seq:5", 1);
    f.check("seq:>10", 4);
    f.check("seq:[1 TO 3]", 3);
    f.check("seq:{1 TO 3}", 1);
    f.check("seq:>2.5 seq:<4.5", 2);
    f.check("seq:<0", 0);
}

#[test]
fn levels_by_severity() {
    let f = Fixture::new();
    f.check("level:>=warn", 6);
    f.check("level:>warn", 4);
    f.check("level:<info", 2);
    f.check("level:<=trace", 1);
    f.check("level:[debug TO info]", 6);
    f.check("level:>=WARN", 6);
}

#[test]
fn exists() {
    let f = Fixture::new();
    f.check("_exists_:latency_ms", 5);
    f.check("_exists_:task_id", 1);
    f.check("_exists_:user", 2);
    f.check("_exists_:http", 1);
    f.check("_exists_:nosuchfield", 0);
    f.check("_exists_:msg", 13);
    f.check("_exists_:seq", 13);
    f.check("-_exists_:task", 0);
}

#[test]
fn boolean_logic() {
    let f = Fixture::new();
    f.check("-level:info", 8);
    f.check("NOT task:charge", 9);
    f.check("NOT NOT task:charge", 4);
    f.check("task:auth -user:bob", 2);
    f.check("task:auth OR task:health", 4);
    f.check("(task:auth OR task:health) level:info", 4);
    f.check("level:error (timeout OR declined)", 2);
    f.check("level:error AND NOT charge", 0);
    f.check("task:charge -(level:error OR level:warn)", 0);
    f.check("-user:bob -user:alice", 11);
}

#[test]
fn audit_records_only_when_named() {
    let f = Fixture::new();
    f.check("kind:audit", 2);
    f.check("kind:audit password", 1);
    f.check("password OR kind:audit", 5);
    f.check("-kind:audit", 13);
    f.check("checkpoint", 0);
    f.check("checkpoint kind:audit", 1);
    f.check("kind:aud*", 2);
    f.check("kind:*", 3);
    assert!(mentions_audit(&parse_query("x (a OR kind:audit)").unwrap()));
    assert!(!mentions_audit(&parse_query("audit kind:log").unwrap()));
}

#[test]
fn errors_name_the_problem() {
    let f = Fixture::new();
    f.check_err(
        "level:>=warning",
        CompileError::UnknownLevel {
            name: "warning".into(),
        },
    );
    f.check_err(
        "latency_ms:>abc",
        CompileError::NotANumber {
            field: "latency_ms".into(),
            value: "abc".into(),
        },
    );
    f.check_err(
        "seq:abc",
        CompileError::NotANumber {
            field: "seq".into(),
            value: "abc".into(),
        },
    );
    for query in ["ts:>5", "task:>5", "msg:>5", "seq:1*"] {
        let parsed = parse_query(query).unwrap();
        let err = compile(&parsed, &f.schema).err();
        assert!(
            matches!(err, Some(CompileError::Unsupported { .. })),
            "{query:?}: {err:?}"
        );
    }
    let msg = compile(&parse_query("level:>loud").unwrap(), &f.schema)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        msg.as_deref(),
        Some("unknown level `loud`: expected one of trace, debug, info, warn, error, fatal")
    );
}
