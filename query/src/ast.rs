//! The query AST: what `parse_query` produces and `compile` consumes.
//!
//! Invariant: for every AST the parser can produce, `parse_query(&q.to_string())` gives back
//! an equal AST. `Display` quotes or escapes whatever needs it. Two shapes the parser never
//! produces cannot be printed faithfully: an empty `Term`, and `And`/`Or` with fewer than two
//! children. Field names must match `[A-Za-z_@][A-Za-z0-9_.@-]*` (see [`is_field_name`]).

use std::fmt;
use std::time::Duration;

/// A whole query: an optional filter expression and zero or more pipeline stages.
///
/// `expr: None` means "match everything" (an empty query).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The filter; `None` matches all events.
    pub expr: Option<Expr>,
    /// Stages after `|`, in order. Executing them is the collector's job.
    pub stages: Vec<Stage>,
}

/// A filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A free-text word, matched against `msg` and the raw line.
    Term(String),
    /// A quoted free-text phrase: its tokens in order.
    Phrase(String),
    /// `field:value` and its variants.
    Field {
        /// The field name as typed.
        field: String,
        /// What the field must hold.
        value: FieldValue,
    },
    /// `_exists_:field`.
    Exists(String),
    /// All must match (adjacent terms, or `AND`).
    And(Vec<Expr>),
    /// Any must match (`OR`).
    Or(Vec<Expr>),
    /// Must not match (`NOT x` or `-x`).
    Not(Box<Expr>),
}

/// The right-hand side of `field:...`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `field:value` or `field:"quoted value"`: the whole value, exactly.
    Exact(String),
    /// `field:abc*` or `field:"a b"*`: values starting with this.
    Prefix(String),
    /// `field:>250`, `level:>=warn`.
    Compare(CompareOp, Operand),
    /// `field:[10 TO 20]`, `{}` for exclusive ends, `*` for an open end.
    Range {
        /// Lower end; `None` is `*`.
        lo: Option<Operand>,
        /// Upper end; `None` is `*`.
        hi: Option<Operand>,
        /// `[` (true) or `{` (false).
        lo_inclusive: bool,
        /// `]` (true) or `}` (false).
        hi_inclusive: bool,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// The thing compared against: a number, or a word such as a level name.
///
/// The parser does not decide whether a word makes sense for the field; `compile` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A decimal number such as `250`, `-2` or `1.5`.
    Number(f64),
    /// Any other bare word, such as `warn`.
    Word(String),
}

/// A pipeline stage after `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// `count`: the number of matching events.
    Count,
    /// `count by a, b`: counts per distinct value combination.
    CountBy(Vec<String>),
    /// `top N field`: the N most common values of a field.
    Top {
        /// How many values.
        n: u64,
        /// Which field.
        field: String,
    },
    /// `timechart 1m count [by field]`: counts per time bucket.
    Timechart {
        /// Bucket width.
        span: Span,
        /// Optional split field.
        by: Option<String>,
    },
}

/// A time span such as `30s`, `1m`, `1h` or `1d`, kept as typed so it prints back the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// How many units (at least 1).
    pub amount: u64,
    /// Which unit.
    pub unit: SpanUnit,
}

/// The unit of a [`Span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanUnit {
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
}

impl SpanUnit {
    fn seconds(self) -> u64 {
        match self {
            SpanUnit::Seconds => 1,
            SpanUnit::Minutes => 60,
            SpanUnit::Hours => 3600,
            SpanUnit::Days => 86_400,
        }
    }

    fn suffix(self) -> char {
        match self {
            SpanUnit::Seconds => 's',
            SpanUnit::Minutes => 'm',
            SpanUnit::Hours => 'h',
            SpanUnit::Days => 'd',
        }
    }

    pub(crate) fn from_suffix(c: char) -> Option<SpanUnit> {
        match c {
            's' => Some(SpanUnit::Seconds),
            'm' => Some(SpanUnit::Minutes),
            'h' => Some(SpanUnit::Hours),
            'd' => Some(SpanUnit::Days),
            _ => None,
        }
    }
}

impl Span {
    /// The span as a `Duration` (saturating on absurdly large amounts).
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.amount.saturating_mul(self.unit.seconds()))
    }
}

/// Whether `name` is a field name the parser accepts before `:`.
pub fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' || c == '@' => {}
        _ => return false,
    }
    chars.all(is_field_char)
}

pub(crate) fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')
}

/// Characters that end a bare free-text word.
pub(crate) fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '|')
}

/// Whether a text is a number as the parser reads it: `-?digits(.digits)?`.
pub(crate) fn is_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

/// Whether a bare value would parse back as `Exact(s)`.
fn value_is_bare(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    !matches!(first, '"' | '>' | '<' | '[' | '{' | '(')
        && !s.ends_with('*')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ')' | '"' | '|' | '\\'))
}

fn write_term(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let keyword = matches!(s, "AND" | "OR" | "NOT");
    for (i, c) in s.chars().enumerate() {
        let escape = ends_word(c) || matches!(c, '\\' | ':') || (i == 0 && (c == '-' || keyword));
        if escape {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    Ok(())
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Number(n) => write!(f, "{n}"),
            Operand::Word(w) => f.write_str(w),
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        })
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Exact(v) if value_is_bare(v) => f.write_str(v),
            FieldValue::Exact(v) => write_quoted(f, v),
            FieldValue::Prefix(p) if value_is_bare(p) => write!(f, "{p}*"),
            FieldValue::Prefix(p) => {
                write_quoted(f, p)?;
                f.write_str("*")
            }
            FieldValue::Compare(op, v) => write!(f, "{op}{v}"),
            FieldValue::Range {
                lo,
                hi,
                lo_inclusive,
                hi_inclusive,
            } => {
                let end =
                    |o: &Option<Operand>| o.as_ref().map_or("*".to_string(), Operand::to_string);
                write!(
                    f,
                    "{}{} TO {}{}",
                    if *lo_inclusive { '[' } else { '{' },
                    end(lo),
                    end(hi),
                    if *hi_inclusive { ']' } else { '}' },
                )
            }
        }
    }
}

impl Expr {
    fn fmt_child(&self, f: &mut fmt::Formatter<'_>, parenthesize: bool) -> fmt::Result {
        if parenthesize {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Term(t) if t.is_empty() => f.write_str("\"\""),
            Expr::Term(t) => write_term(f, t),
            Expr::Phrase(p) => write_quoted(f, p),
            Expr::Field { field, value } => write!(f, "{field}:{value}"),
            Expr::Exists(field) => write!(f, "_exists_:{field}"),
            Expr::And(children) => {
                for (i, child) in children.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    child.fmt_child(f, matches!(child, Expr::And(_) | Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Or(children) => {
                for (i, child) in children.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" OR ")?;
                    }
                    child.fmt_child(f, matches!(child, Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Not(inner) => {
                f.write_str("-")?;
                inner.fmt_child(f, matches!(**inner, Expr::And(_) | Expr::Or(_)))
            }
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Count => f.write_str("count"),
            Stage::CountBy(fields) => write!(f, "count by {}", fields.join(", ")),
            Stage::Top { n, field } => write!(f, "top {n} {field}"),
            Stage::Timechart { span, by: None } => write!(f, "timechart {span} count"),
            Stage::Timechart { span, by: Some(by) } => {
                write!(f, "timechart {span} count by {by}")
            }
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if let Some(expr) = &self.expr {
            write!(f, "{expr}")?;
            first = false;
        }
        for stage in &self.stages {
            if first {
                write!(f, "| {stage}")?;
            } else {
                write!(f, " | {stage}")?;
            }
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_duration() {
        let span = Span {
            amount: 30,
            unit: SpanUnit::Seconds,
        };
        assert_eq!(span.duration(), Duration::from_secs(30));
        let span = Span {
            amount: 2,
            unit: SpanUnit::Days,
        };
        assert_eq!(span.duration(), Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn numbers_and_field_names() {
        for n in ["0", "-2", "1.5", "250"] {
            assert!(is_number(n), "{n}");
        }
        for n in ["", "-", "1.", ".5", "1e5", "inf", "nan", "1-2"] {
            assert!(!is_number(n), "{n}");
        }
        assert!(is_field_name("task_id"));
        assert!(is_field_name("http.status"));
        assert!(!is_field_name("12"));
        assert!(!is_field_name(""));
    }

    #[test]
    fn display_escapes() {
        let q = Expr::And(vec![
            Expr::Term("-x".into()),
            Expr::Term("AND".into()),
            Expr::Term("a:b".into()),
            Expr::Field {
                field: "msg".into(),
                value: FieldValue::Exact("a b".into()),
            },
            Expr::Field {
                field: "f".into(),
                value: FieldValue::Prefix("ab".into()),
            },
        ]);
        assert_eq!(q.to_string(), r#"\-x \AND a\:b msg:"a b" f:ab*"#);
    }
}
