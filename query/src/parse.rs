//! The query parser (nom): text → [`Query`], with errors that point at the offending column.
//!
//! Grammar, loosest binding first:
//!
//! ```text
//! query    := or_expr? ( '|' stage )*
//! or_expr  := and_expr ( 'OR' and_expr )*
//! and_expr := unary ( 'AND'? unary )*          adjacent terms mean AND
//! unary    := 'NOT' unary | '-' unary | primary
//! primary  := '(' or_expr ')' | '"phrase"' | '_exists_:' NAME | NAME ':' value | word
//! value    := '"quoted"' '*'? | ('>'|'>='|'<'|'<=') operand
//!           | ('['|'{') end 'TO' end (']'|'}') | bare '*'?
//! stage    := 'count' ( 'by' NAME (',' NAME)* )? | 'top' N NAME
//!           | 'timechart' SPAN 'count' ( 'by' NAME )?
//! ```
//!
//! A bare value runs to the next whitespace or `)`, so `url:http://x/y` and `host:ip-10-0-0-5`
//! need no quotes. In free-text words a backslash escapes the next character (`a\:b`, `\-x`).
//! Nesting is limited to [`MAX_DEPTH`] levels so hostile input cannot exhaust the stack.

use std::borrow::Cow;

use nom::IResult;
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::{digit1, multispace0};
use nom::error::ErrorKind;

use crate::ast::{
    CompareOp, Expr, FieldValue, Operand, Query, Span, SpanUnit, Stage, ends_word, is_field_char,
    is_field_name, is_number,
};

/// How deeply parentheses and `NOT`s may nest.
pub const MAX_DEPTH: usize = 64;

/// A query that does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: expected {expected}")]
pub struct ParseError {
    /// Byte offset into the query.
    pub position: usize,
    /// 1-based column in characters (what a person counts).
    pub column: usize,
    /// What was expected at that point, in words, e.g. "closing `)`".
    pub expected: String,
}

impl ParseError {
    fn new(query: &str, position: usize, expected: impl Into<String>) -> ParseError {
        let position = position.min(query.len());
        let column = query
            .char_indices()
            .take_while(|(i, _)| *i < position)
            .count()
            + 1;
        ParseError {
            position,
            column,
            expected: expected.into(),
        }
    }

    /// The query, a line with a caret under the error, and the message:
    ///
    /// ```text
    /// (level:error
    ///             ^
    /// expected closing `)`
    /// ```
    pub fn render(&self, query: &str) -> String {
        let line: String = query
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let pad = " ".repeat(self.column.saturating_sub(1));
        format!("{line}\n{pad}^\nexpected {}", self.expected)
    }
}

/// Parses a query. An empty (or all-whitespace) query matches everything.
///
/// ```
/// use spoor_query::{parse_query, Expr, FieldValue};
/// let q = parse_query("level:error timeout").unwrap();
/// assert_eq!(q.to_string(), "level:error timeout");
/// assert!(matches!(q.expr, Some(Expr::And(_))));
/// ```
pub fn parse_query(input: &str) -> Result<Query, ParseError> {
    match query(input) {
        Ok((_, q)) => Ok(q),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(ParseError::new(
            input,
            input.len() - e.input.len(),
            e.expected,
        )),
        Err(nom::Err::Incomplete(_)) => Err(ParseError::new(input, input.len(), "more input")),
    }
}

/// The parser's internal error: the remaining input where it failed, and a message.
#[derive(Debug)]
struct PErr<'a> {
    input: &'a str,
    expected: Cow<'static, str>,
}

impl<'a> nom::error::ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, kind: ErrorKind) -> Self {
        PErr {
            input,
            expected: Cow::Owned(format!("{kind:?}").to_lowercase()),
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        // Keep whichever branch got further.
        if other.input.len() <= self.input.len() {
            other
        } else {
            self
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

fn fail<'a, T>(input: &'a str, expected: impl Into<Cow<'static, str>>) -> Res<'a, T> {
    Err(nom::Err::Failure(PErr {
        input,
        expected: expected.into(),
    }))
}

fn ws(i: &str) -> Res<'_, &str> {
    multispace0(i)
}

/// If `i` (after whitespace) starts with the keyword `kw` as a whole word, the rest after it.
fn keyword<'a>(i: &'a str, kw: &str) -> Option<&'a str> {
    let i = i.trim_start();
    let rest = i.strip_prefix(kw)?;
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if ends_word(c) => Some(rest),
        Some(_) => None,
    }
}

/// Same as [`keyword`] but ASCII case-insensitive, for pipeline stage words.
fn keyword_nocase<'a>(i: &'a str, kw: &str) -> Option<&'a str> {
    let i = i.trim_start();
    let head = i.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    let rest = &i[kw.len()..];
    rest.chars()
        .next()
        .is_none_or(|c| c.is_whitespace() || c == '|' || c == ',')
        .then_some(rest)
}

fn query(i: &str) -> Res<'_, Query> {
    let (i, _) = ws(i)?;
    let (i, expr) = if i.is_empty() || i.starts_with('|') {
        (i, None)
    } else {
        let (i, e) = or_expr(i, 0)?;
        (i, Some(e))
    };
    let (mut i, _) = ws(i)?;
    let mut stages = Vec::new();
    while let Some(rest) = i.strip_prefix('|') {
        let (rest, _) = ws(rest)?;
        let (rest, stage) = stage(rest)?;
        let (rest, _) = ws(rest)?;
        stages.push(stage);
        i = rest;
    }
    if !i.is_empty() {
        let expected = if i.starts_with(')') {
            "the end of the query (this `)` has no matching `(`)"
        } else if expr.is_some() && stages.is_empty() {
            "`AND`, `OR`, another term, `|` or the end of the query"
        } else {
            "`|` or the end of the query"
        };
        return fail(i, expected);
    }
    Ok((i, Query { expr, stages }))
}

/// Fails unless something that can start a term follows an operator.
fn need_operand<'a>(i: &'a str, op: &str) -> Res<'a, ()> {
    match i.chars().next() {
        None | Some(')' | '|') => fail(i, format!("a search term after `{op}`")),
        _ => Ok((i, ())),
    }
}

fn check_depth(i: &str, depth: usize) -> Res<'_, ()> {
    if depth > MAX_DEPTH {
        return fail(
            i,
            format!("less nesting (at most {MAX_DEPTH} levels of parentheses and `NOT`)"),
        );
    }
    Ok((i, ()))
}

fn or_expr(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, first) = and_expr(i, depth)?;
    let mut items = vec![first];
    while let Some(rest) = keyword(i, "OR") {
        let (rest, _) = ws(rest)?;
        need_operand(rest, "OR")?;
        let (rest, e) = and_expr(rest, depth)?;
        items.push(e);
        i = rest;
    }
    Ok((i, collapse(items, Expr::Or)))
}

fn and_expr(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, first) = unary(i, depth)?;
    let mut items = vec![first];
    loop {
        let (rest, _) = ws(i)?;
        if rest.is_empty()
            || rest.starts_with(')')
            || rest.starts_with('|')
            || keyword(rest, "OR").is_some()
        {
            break;
        }
        let rest = match keyword(rest, "AND") {
            Some(after) => {
                let (after, _) = ws(after)?;
                need_operand(after, "AND")?;
                after
            }
            None => rest,
        };
        let (rest, e) = unary(rest, depth)?;
        items.push(e);
        i = rest;
    }
    Ok((i, collapse(items, Expr::And)))
}

fn collapse(mut items: Vec<Expr>, wrap: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    wrap(items)
}

fn unary(i: &str, depth: usize) -> Res<'_, Expr> {
    check_depth(i, depth)?;
    if let Some(rest) = keyword(i, "NOT") {
        let (rest, _) = ws(rest)?;
        need_operand(rest, "NOT")?;
        let (rest, e) = unary(rest, depth + 1)?;
        return Ok((rest, Expr::Not(Box::new(e))));
    }
    if let Some(rest) = i.strip_prefix('-') {
        if rest.chars().next().is_none_or(char::is_whitespace) {
            return fail(rest, "a search term right after `-`");
        }
        need_operand(rest, "-")?;
        let (rest, e) = unary(rest, depth + 1)?;
        return Ok((rest, Expr::Not(Box::new(e))));
    }
    primary(i, depth)
}

fn primary(i: &str, depth: usize) -> Res<'_, Expr> {
    match i.chars().next() {
        None | Some(')' | '|') => fail(i, "a search term"),
        Some('(') => {
            let (rest, _) = ws(&i[1..])?;
            if rest.starts_with(')') {
                return fail(rest, "a search term inside `( )`");
            }
            let (rest, e) = or_expr(rest, depth + 1)?;
            let (rest, _) = ws(rest)?;
            match rest.strip_prefix(')') {
                Some(rest) => Ok((rest, e)),
                None => fail(rest, "closing `)`"),
            }
        }
        Some('"') => {
            let (rest, s) = quoted(i)?;
            Ok((rest, Expr::Phrase(s)))
        }
        Some(_) => field_or_term(i),
    }
}

/// A `"quoted string"` with `\"` and `\\` escapes; other backslashes are kept as typed.
fn quoted(i: &str) -> Res<'_, String> {
    let Some(body) = i.strip_prefix('"') else {
        return fail(i, "an opening quote");
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((&body[at + 1..], out)),
            '\\' => match chars.clone().next() {
                Some((_, next @ ('"' | '\\'))) => {
                    out.push(next);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    fail(&i[i.len()..], "closing quote `\"`")
}

fn field_or_term(i: &str) -> Res<'_, Expr> {
    let (after_name, name) = take_while(is_field_char)(i)?;
    if let Some(value_input) = after_name.strip_prefix(':')
        && is_field_name(name)
    {
        if name == "_exists_" {
            return exists(value_input);
        }
        let (rest, value) = value(value_input, name)?;
        return Ok((
            rest,
            Expr::Field {
                field: name.to_string(),
                value,
            },
        ));
    }
    term(i)
}

fn exists(i: &str) -> Res<'_, Expr> {
    let (rest, name) = take_while(is_field_char)(i)?;
    if !is_field_name(name) {
        return fail(i, "a field name after `_exists_:`");
    }
    if let Some(c) = rest.chars().next()
        && !(c.is_whitespace() || c == ')' || c == '|')
    {
        return fail(rest, "whitespace or `)` after the field name");
    }
    Ok((rest, Expr::Exists(name.to_string())))
}

/// A bare free-text word; `\` escapes the next character.
fn term(i: &str) -> Res<'_, Expr> {
    let mut out = String::new();
    let mut escaped_any = false;
    let mut chars = i.char_indices();
    let mut end = i.len();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, next)) => {
                    out.push(next);
                    escaped_any = true;
                }
                None => return fail(&i[i.len()..], "a character after `\\`"),
            }
        } else if ends_word(c) {
            end = at;
            break;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        return fail(i, "a search term");
    }
    if !escaped_any && (out == "AND" || out == "OR") {
        return fail(i, format!("a search term before `{out}`"));
    }
    Ok((&i[end..], Expr::Term(out)))
}

/// The run of a bare value: up to whitespace or `)`.
fn bare_run(i: &str) -> (&str, &str) {
    let end = i
        .find(|c: char| c.is_whitespace() || c == ')')
        .unwrap_or(i.len());
    (&i[end..], &i[..end])
}

fn value<'a>(i: &'a str, field: &str) -> Res<'a, FieldValue> {
    match i.chars().next() {
        None => fail(i, format!("a value after `{field}:`")),
        Some(c) if c.is_whitespace() || c == ')' => fail(i, format!("a value after `{field}:`")),
        Some('(') => fail(
            i,
            format!("a value after `{field}:` (groups like `{field}:(a OR b)` are not supported)"),
        ),
        Some('"') => {
            let (rest, s) = quoted(i)?;
            match rest.strip_prefix('*') {
                Some(rest) => Ok((rest, FieldValue::Prefix(s))),
                None => Ok((rest, FieldValue::Exact(s))),
            }
        }
        Some('>' | '<') => compare(i),
        Some('[' | '{') => range(i, field),
        Some(_) => {
            let (rest, run) = bare_run(i);
            match run.strip_suffix('*') {
                Some(prefix) => Ok((rest, FieldValue::Prefix(prefix.to_string()))),
                None => Ok((rest, FieldValue::Exact(run.to_string()))),
            }
        }
    }
}

fn operand(text: &str) -> Operand {
    if is_number(text)
        && let Ok(n) = text.parse::<f64>()
    {
        return Operand::Number(n);
    }
    Operand::Word(text.to_string())
}

fn compare(i: &str) -> Res<'_, FieldValue> {
    let (rest, op) = if let Some(r) = i.strip_prefix(">=") {
        (r, CompareOp::Ge)
    } else if let Some(r) = i.strip_prefix("<=") {
        (r, CompareOp::Le)
    } else if let Some(r) = i.strip_prefix('>') {
        (r, CompareOp::Gt)
    } else if let Some(r) = i.strip_prefix('<') {
        (r, CompareOp::Lt)
    } else {
        return fail(i, "`>`, `>=`, `<` or `<=`");
    };
    let (after, run) = bare_run(rest);
    if run.is_empty() {
        return fail(rest, format!("a number or a level name after `{op}`"));
    }
    Ok((after, FieldValue::Compare(op, operand(run))))
}

fn range_end(i: &str) -> Res<'_, Option<Operand>> {
    let end = i
        .find(|c: char| c.is_whitespace() || matches!(c, ')' | ']' | '}'))
        .unwrap_or(i.len());
    match &i[..end] {
        "" => fail(i, "a number, a word or `*` in the range"),
        "*" => Ok((&i[end..], None)),
        text => Ok((&i[end..], Some(operand(text)))),
    }
}

fn range<'a>(i: &'a str, field: &str) -> Res<'a, FieldValue> {
    let lo_inclusive = i.starts_with('[');
    let (rest, _) = ws(&i[1..])?;
    let (rest, lo) = range_end(rest)?;
    let Some(rest) = keyword(rest, "TO") else {
        let (rest, _) = ws(rest)?;
        return fail(rest, format!("`TO` in the range `{field}:[lo TO hi]`"));
    };
    let (rest, _) = ws(rest)?;
    let (rest, hi) = range_end(rest)?;
    let (rest, _) = ws(rest)?;
    let hi_inclusive = match rest.chars().next() {
        Some(']') => true,
        Some('}') => false,
        _ => return fail(rest, "closing `]` or `}`"),
    };
    Ok((
        &rest[1..],
        FieldValue::Range {
            lo,
            hi,
            lo_inclusive,
            hi_inclusive,
        },
    ))
}

fn stage_field(i: &str) -> Res<'_, String> {
    let (rest, _) = ws(i)?;
    let (after, name) = take_while(is_field_char)(rest)?;
    if !is_field_name(name) {
        return fail(rest, "a field name");
    }
    Ok((after, name.to_string()))
}

fn stage(i: &str) -> Res<'_, Stage> {
    const STAGES: &str =
        "a stage: `count`, `count by FIELD`, `top N FIELD` or `timechart SPAN count`";
    if let Some(rest) = keyword_nocase(i, "count") {
        let Some(rest) = keyword_nocase(rest, "by") else {
            return Ok((rest, Stage::Count));
        };
        let (mut rest, first) = stage_field(rest)?;
        let mut fields = vec![first];
        loop {
            let (r, _) = ws(rest)?;
            let Some(r) = r.strip_prefix(',') else { break };
            let (r, f) = stage_field(r)?;
            fields.push(f);
            rest = r;
        }
        return Ok((rest, Stage::CountBy(fields)));
    }
    if let Some(rest) = keyword_nocase(i, "top") {
        let (rest, _) = ws(rest)?;
        let n = digit1::<_, PErr>(rest)
            .ok()
            .and_then(|(r, d)| d.parse::<u64>().ok().map(|n| (r, n)));
        let Some((rest, n)) = n else {
            return fail(rest, "a number after `top`");
        };
        let (rest, field) = stage_field(rest)?;
        return Ok((rest, Stage::Top { n, field }));
    }
    if let Some(rest) = keyword_nocase(i, "timechart") {
        let (rest, _) = ws(rest)?;
        let (rest, span) = span(rest)?;
        let Some(rest) = keyword_nocase(rest, "count") else {
            let (rest, _) = ws(rest)?;
            return fail(rest, "`count` after the span (the only aggregate so far)");
        };
        let (rest, by) = match keyword_nocase(rest, "by") {
            Some(rest) => {
                let (rest, f) = stage_field(rest)?;
                (rest, Some(f))
            }
            None => (rest, None),
        };
        return Ok((rest, Stage::Timechart { span, by }));
    }
    fail(i, STAGES)
}

fn span(i: &str) -> Res<'_, Span> {
    const SPAN: &str = "a span such as `30s`, `1m`, `1h` or `1d`";
    let parsed = take_while1::<_, _, PErr>(|c: char| c.is_ascii_digit())(i)
        .ok()
        .and_then(|(rest, digits)| {
            let amount = digits.parse::<u64>().ok().filter(|n| *n > 0)?;
            let unit = SpanUnit::from_suffix(rest.chars().next()?)?;
            let rest = &rest[1..];
            rest.chars()
                .next()
                .is_none_or(char::is_whitespace)
                .then_some((rest, Span { amount, unit }))
        });
    match parsed {
        Some((rest, span)) => Ok((rest, span)),
        None => fail(i, SPAN),
    }
}

#[cfg(test)]
mod tests;
