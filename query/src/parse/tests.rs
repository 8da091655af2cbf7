//! Table tests, error-position tests and the print/parse round trip.
#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failure report.

use proptest::prelude::*;

use super::*;

fn term(s: &str) -> Expr {
    Expr::Term(s.to_string())
}

fn phrase(s: &str) -> Expr {
    Expr::Phrase(s.to_string())
}

fn field(f: &str, value: FieldValue) -> Expr {
    Expr::Field {
        field: f.to_string(),
        value,
    }
}

fn exact(f: &str, v: &str) -> Expr {
    field(f, FieldValue::Exact(v.to_string()))
}

fn not(e: Expr) -> Expr {
    Expr::Not(Box::new(e))
}

fn num(n: f64) -> Operand {
    Operand::Number(n)
}

fn q(expr: Expr) -> Query {
    Query {
        expr: Some(expr),
        stages: vec![],
    }
}

#[track_caller]
fn check(input: &str, expected: Query) {
    let got = match parse_query(input) {
        Ok(got) => got,
        Err(e) => panic!("{input:?} did not parse:\n{}", e.render(input)),
    };
    assert_eq!(got, expected, "parsing {input:?}");
    // What we print must parse back to the same thing.
    let printed = got.to_string();
    assert_eq!(
        parse_query(&printed).ok(),
        Some(expected),
        "reparsing {printed:?} (printed from {input:?})"
    );
}

#[track_caller]
fn check_expr(input: &str, expected: Expr) {
    check(input, q(expected));
}

#[track_caller]
fn check_err(input: &str, position: usize, expected_contains: &str) {
    match parse_query(input) {
        Ok(got) => panic!("{input:?} parsed as {got:?}, expected an error"),
        Err(e) => {
            assert_eq!(
                (e.position, e.expected.contains(expected_contains)),
                (position, true),
                "{input:?}: got {e:?}\n{}",
                e.render(input)
            );
        }
    }
}

#[test]
fn empty_matches_all() {
    for input in ["", "   ", "\t\n"] {
        check(
            input,
            Query {
                expr: None,
                stages: vec![],
            },
        );
    }
}

#[test]
fn free_text() {
    check_expr("timeout", term("timeout"));
    check_expr(
        "Failed password",
        Expr::And(vec![term("Failed"), term("password")]),
    );
    check_expr(r#""Failed password""#, phrase("Failed password"));
    check_expr(r#""say \"hi\" \\ bye""#, phrase(r#"say "hi" \ bye"#));
    check_expr(r#""C:\temp""#, phrase(r"C:\temp"));
    check_expr("foo-bar", term("foo-bar"));
    check_expr("12:30:45", term("12:30:45"));
    check_expr(
        r"a\:b \-x \AND",
        Expr::And(vec![term("a:b"), term("-x"), term("AND")]),
    );
    check_expr(
        "and or not",
        Expr::And(vec![term("and"), term("or"), term("not")]),
    );
    check_expr("héllo wörld", Expr::And(vec![term("héllo"), term("wörld")]));
}

#[test]
fn field_values() {
    check_expr("level:error", exact("level", "error"));
    check_expr("task_id:dl-bar-001", exact("task_id", "dl-bar-001"));
    check_expr("host:ip-10-0-0-5", exact("host", "ip-10-0-0-5"));
    check_expr("url:http://x/y", exact("url", "http://x/y"));
    check_expr(r#"msg:"charge failed""#, exact("msg", "charge failed"));
    check_expr(r#"f:"a\"b""#, exact("f", "a\"b"));
    check_expr(r#"f:"abc*""#, exact("f", "abc*"));
    check_expr(
        "task:parse*",
        field("task", FieldValue::Prefix("parse".into())),
    );
    check_expr(
        r#"task:"a b"*"#,
        field("task", FieldValue::Prefix("a b".into())),
    );
    check_expr("f:*", field("f", FieldValue::Prefix(String::new())));
    check_expr("http.status:500", exact("http.status", "500"));
    check_expr("_exists_:latency_ms", Expr::Exists("latency_ms".into()));
    check_expr("f:a(b", exact("f", "a(b"));
}

#[test]
fn comparisons_and_ranges() {
    use CompareOp::*;
    let cmp = |f: &str, op, o| field(f, FieldValue::Compare(op, o));
    check_expr("latency_ms:>250", cmp("latency_ms", Gt, num(250.0)));
    check_expr("x:>=1.5", cmp("x", Ge, num(1.5)));
    check_expr("x:<3", cmp("x", Lt, num(3.0)));
    check_expr("x:<=-2", cmp("x", Le, num(-2.0)));
    check_expr(
        "level:>=warn",
        cmp("level", Ge, Operand::Word("warn".into())),
    );
    check_expr("x:>1e5", cmp("x", Gt, Operand::Word("1e5".into())));
    check_expr(
        "x:[10 TO 20]",
        field(
            "x",
            FieldValue::Range {
                lo: Some(num(10.0)),
                hi: Some(num(20.0)),
                lo_inclusive: true,
                hi_inclusive: true,
            },
        ),
    );
    check_expr(
        "x:{ 1.5 TO * ]",
        field(
            "x",
            FieldValue::Range {
                lo: Some(num(1.5)),
                hi: None,
                lo_inclusive: false,
                hi_inclusive: true,
            },
        ),
    );
    check_expr(
        "level:[info TO error}",
        field(
            "level",
            FieldValue::Range {
                lo: Some(Operand::Word("info".into())),
                hi: Some(Operand::Word("error".into())),
                lo_inclusive: true,
                hi_inclusive: false,
            },
        ),
    );
}

#[test]
fn boolean_structure() {
    let (a, b, c, d) = (term("a"), term("b"), term("c"), term("d"));
    check_expr("a AND b", Expr::And(vec![a.clone(), b.clone()]));
    check_expr("a OR b", Expr::Or(vec![a.clone(), b.clone()]));
    // OR binds looser than AND, whether AND is written or implied.
    check_expr(
        "a b OR c AND d",
        Expr::Or(vec![
            Expr::And(vec![a.clone(), b.clone()]),
            Expr::And(vec![c.clone(), d.clone()]),
        ]),
    );
    check_expr(
        "a (b OR c)",
        Expr::And(vec![a.clone(), Expr::Or(vec![b.clone(), c.clone()])]),
    );
    check_expr("(a)", a.clone());
    check_expr("((a b))", Expr::And(vec![a.clone(), b.clone()]));
    check_expr(
        "(a b) c",
        Expr::And(vec![Expr::And(vec![a.clone(), b.clone()]), c.clone()]),
    );
    check_expr("NOT a", not(a.clone()));
    check_expr("-a", not(a.clone()));
    check_expr("--a", not(not(a.clone())));
    check_expr("-level:debug", not(exact("level", "debug")));
    check_expr(r#"-"x y""#, not(phrase("x y")));
    check_expr(
        "a -(b OR c)",
        Expr::And(vec![a.clone(), not(Expr::Or(vec![b.clone(), c.clone()]))]),
    );
    check_expr("a NOT b", Expr::And(vec![a.clone(), not(b.clone())]));
    check_expr("a AND NOT b", Expr::And(vec![a.clone(), not(b.clone())]));
    check_expr("NOTE", term("NOTE"));
    check_expr(
        "ORANGE ANDROID",
        Expr::And(vec![term("ORANGE"), term("ANDROID")]),
    );
    check_expr(
        "level:error (task:a OR task:b)",
        Expr::And(vec![
            exact("level", "error"),
            Expr::Or(vec![exact("task", "a"), exact("task", "b")]),
        ]),
    );
    check_expr("a\"b c\"", Expr::And(vec![a.clone(), phrase("b c")]));
}

#[test]
fn pipeline_stages() {
    let lvl = exact("level", "error");
    check(
        "level:error | count",
        Query {
            expr: Some(lvl.clone()),
            stages: vec![Stage::Count],
        },
    );
    check(
        "level:error | count by task, host",
        Query {
            expr: Some(lvl.clone()),
            stages: vec![Stage::CountBy(vec!["task".into(), "host".into()])],
        },
    );
    check(
        "| top 10 task",
        Query {
            expr: None,
            stages: vec![Stage::Top {
                n: 10,
                field: "task".into(),
            }],
        },
    );
    check(
        "x | TIMECHART 1m count by level | count",
        Query {
            expr: Some(term("x")),
            stages: vec![
                Stage::Timechart {
                    span: Span {
                        amount: 1,
                        unit: SpanUnit::Minutes,
                    },
                    by: Some("level".into()),
                },
                Stage::Count,
            ],
        },
    );
    for (text, amount, unit) in [
        ("30s", 30, SpanUnit::Seconds),
        ("1h", 1, SpanUnit::Hours),
        ("1d", 1, SpanUnit::Days),
    ] {
        check(
            &format!("|timechart {text} count"),
            Query {
                expr: None,
                stages: vec![Stage::Timechart {
                    span: Span { amount, unit },
                    by: None,
                }],
            },
        );
    }
}

#[test]
fn errors_point_at_the_problem() {
    check_err("(level:error", 12, "closing `)`");
    check_err("level:", 6, "a value after `level:`");
    check_err("level: error", 6, "a value after `level:`");
    check_err(r#"msg:"unterminated"#, 17, "closing quote");
    check_err(r#""abc"#, 4, "closing quote");
    check_err("a)", 1, "no matching `(`");
    check_err("()", 1, "inside `( )`");
    check_err("a AND", 5, "after `AND`");
    check_err("a OR )", 5, "after `OR`");
    check_err("NOT", 3, "after `NOT`");
    check_err("- a", 1, "right after `-`");
    check_err("AND a", 0, "before `AND`");
    check_err("x:>", 3, "a number or a level name");
    check_err("x:[1 20]", 5, "`TO`");
    check_err("x:[1 TO 2", 9, "closing `]`");
    check_err("x:[]", 3, "`*`");
    check_err("a | frobnicate", 4, "a stage");
    check_err("a | top x task", 8, "a number after `top`");
    check_err("a | timechart 5 count", 14, "a span");
    check_err("a | timechart 0m count", 14, "a span");
    check_err("a | timechart 1m sum", 17, "`count` after the span");
    check_err("a | count by", 12, "a field name");
    check_err("a | count x", 10, "`|` or the end");
    check_err("_exists_:", 9, "a field name after `_exists_:`");
    check_err("f:(a OR b)", 2, "not supported");
    check_err(r"a\", 2, "a character after");
    let deep = "(".repeat(200) + "a" + &")".repeat(200);
    check_err(&deep, 65, "less nesting");
    let nots = "-".repeat(200) + "a";
    check_err(&nots, 65, "less nesting");
}

#[test]
fn column_counts_characters_and_render_shows_a_caret() {
    let input = "héllo (wörld";
    let e = parse_query(input).unwrap_err();
    assert_eq!(e.position, input.len());
    assert_eq!(e.column, 13);
    assert_eq!(e.to_string(), "column 13: expected closing `)`");
    assert_eq!(
        e.render(input),
        "héllo (wörld\n            ^\nexpected closing `)`"
    );
}

// ---- round trip ----

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,6}"
}

fn field_name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_.-]{0,8}"
}

fn any_text() -> impl Strategy<Value = String> {
    // Printable text including the characters that need quoting or escaping.
    "[a-zA-Z0-9 \"\\\\:()|*<>\\[\\]{}.,é-]{1,10}"
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        (-100_000i64..100_000, 0u32..3)
            .prop_map(|(n, scale)| { Operand::Number(n as f64 / 10f64.powi(scale as i32)) }),
        "[a-z]{1,6}".prop_map(Operand::Word),
    ]
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    let op = prop_oneof![
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::Lt),
        Just(CompareOp::Le)
    ];
    prop_oneof![
        any_text().prop_map(FieldValue::Exact),
        "[a-z0-9 ]{0,6}".prop_map(FieldValue::Prefix),
        (op, operand()).prop_map(|(op, o)| FieldValue::Compare(op, o)),
        (
            proptest::option::of(operand()),
            proptest::option::of(operand()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(lo, hi, lo_inclusive, hi_inclusive)| FieldValue::Range {
                lo,
                hi,
                lo_inclusive,
                hi_inclusive
            }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        any_text().prop_map(Expr::Term),
        word().prop_map(Expr::Term),
        any_text().prop_map(Expr::Phrase),
        (field_name(), field_value()).prop_map(|(field, value)| Expr::Field { field, value }),
        field_name().prop_map(Expr::Exists),
    ]
    // `_exists_` as a field name means something else; keep it out of generated names.
    .prop_filter("reserved name", |e| match e {
        Expr::Field { field, .. } | Expr::Exists(field) => field != "_exists_",
        _ => true,
    });
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

fn stage() -> impl Strategy<Value = Stage> {
    let unit = prop_oneof![
        Just(SpanUnit::Seconds),
        Just(SpanUnit::Minutes),
        Just(SpanUnit::Hours),
        Just(SpanUnit::Days)
    ];
    prop_oneof![
        Just(Stage::Count),
        proptest::collection::vec(field_name(), 1..3).prop_map(Stage::CountBy),
        (0u64..1000, field_name()).prop_map(|(n, field)| Stage::Top { n, field }),
        (1u64..100, unit, proptest::option::of(field_name())).prop_map(|(amount, unit, by)| {
            Stage::Timechart {
                span: Span { amount, unit },
                by,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn printed_queries_parse_back(
        expr in proptest::option::of(expr()),
        stages in proptest::collection::vec(stage(), 0..3),
    ) {
        let query = Query { expr, stages };
        let printed = query.to_string();
        let parsed = parse_query(&printed);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&query), "printed: {:?} -> {:?}", printed, parsed);
    }

    #[test]
    fn never_panics(input in "\\PC{0,40}") {
        if let Ok(query) = parse_query(&input) {
            let printed = query.to_string();
            prop_assert_eq!(parse_query(&printed).ok(), Some(query), "printed {:?}", printed);
        }
    }

    #[test]
    fn never_panics_on_query_like_text(input in "[a-z:\"()\\[\\]{}<>=*| \\\\-]{0,30}|AND|OR|NOT") {
        match parse_query(&input) {
            Ok(query) => {
                // Whatever parses prints to text that parses to the same AST.
                let printed = query.to_string();
                prop_assert_eq!(parse_query(&printed).ok(), Some(query), "printed {:?}", printed);
            }
            Err(e) => {
                prop_assert!(e.position <= input.len());
                let _ = e.render(&input);
            }
        }
    }
}
