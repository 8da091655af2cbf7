//! Compiling a [`Query`]'s filter into a tantivy query over [`LogSchema`].
//!
//! Rules:
//! - A free word matches when its tokens ([`tokenize_text`]) occur, in order, in `msg` or in
//!   the raw `line`; a quoted phrase likewise. Text with no tokens at all (`*`, `--`) matches
//!   everything.
//! - `field:value` matches the whole value: on a reserved key's own field (`level`, `host`, …),
//!   or on the JSON path in `fields` for any other key. `msg:` is free text on `msg` only.
//! - `field:abc*` matches values starting with `abc` (on `msg`, tokens starting with it).
//! - Comparisons and ranges work on `seq`, on `level` (by severity: `level:>=warn`) and on
//!   numbers in `fields`. `ts` is not queryable here: time ranges are separate parameters.
//! - `_exists_:field` matches events that have the key.
//! - Records with `kind=audit` are left out unless the query names `kind:audit` (see
//!   [`mentions_audit`]).

use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, InvertedIndexRangeQuery, Occur,
    PhrasePrefixQuery, PhraseQuery, Query as TantivyQuery, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};

use crate::ast::{CompareOp, Expr, FieldValue, Operand, Query};
use crate::schema::{LEVELS, LogSchema, level_rank, tokenize_text};

/// A query that parses but cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// `level:>=warning` and the like.
    #[error("unknown level `{name}`: expected one of trace, debug, info, warn, error, fatal")]
    UnknownLevel {
        /// What was typed.
        name: String,
    },
    /// A comparison or range on a number field with something that is not a number.
    #[error("`{field}:` needs a number here, not `{value}`")]
    NotANumber {
        /// The field.
        field: String,
        /// What was typed.
        value: String,
    },
    /// The field does not support this form.
    #[error("`{field}:` {reason}")]
    Unsupported {
        /// The field.
        field: String,
        /// Why, in words.
        reason: &'static str,
    },
}

type Compiled = Box<dyn TantivyQuery>;

/// Compiles a query's filter. Pipeline stages are not compiled: the collector runs them.
pub fn compile(q: &Query, schema: &LogSchema) -> Result<Compiled, CompileError> {
    let filter = match &q.expr {
        None => Box::new(AllQuery) as Compiled,
        Some(expr) => compile_expr(expr, schema)?,
    };
    if mentions_audit(q) {
        return Ok(filter);
    }
    let audit = term_query(Term::from_field_text(schema.kind, "audit"));
    Ok(Box::new(BooleanQuery::new(vec![
        (Occur::Must, filter),
        (Occur::MustNot, audit),
    ])))
}

/// Whether the query names `kind:audit` anywhere (also under `NOT`, or as a prefix of it such
/// as `kind:aud*`). Only then are the collector's own audit records searched.
pub fn mentions_audit(q: &Query) -> bool {
    q.expr.as_ref().is_some_and(expr_mentions_audit)
}

fn expr_mentions_audit(e: &Expr) -> bool {
    match e {
        Expr::Field { field, value } if field == "kind" => match value {
            FieldValue::Exact(v) => v == "audit",
            FieldValue::Prefix(p) => "audit".starts_with(p.as_str()),
            _ => false,
        },
        Expr::And(children) | Expr::Or(children) => children.iter().any(expr_mentions_audit),
        Expr::Not(inner) => expr_mentions_audit(inner),
        _ => false,
    }
}

fn term_query(term: Term) -> Compiled {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

fn compile_expr(e: &Expr, s: &LogSchema) -> Result<Compiled, CompileError> {
    Ok(match e {
        Expr::Term(text) | Expr::Phrase(text) => {
            any_of(vec![text_query(s.msg, text), text_query(s.line, text)])
        }
        Expr::Field { field, value } => field_query(field, value, s)?,
        Expr::Exists(field) => exists_query(field, s)?,
        Expr::And(children) => {
            let mut clauses = Vec::with_capacity(children.len());
            for child in children {
                match child {
                    Expr::Not(inner) => clauses.push((Occur::MustNot, compile_expr(inner, s)?)),
                    _ => clauses.push((Occur::Must, compile_expr(child, s)?)),
                }
            }
            if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Expr::Or(children) => any_of(
            children
                .iter()
                .map(|c| compile_expr(c, s))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Compiled),
            (Occur::MustNot, compile_expr(inner, s)?),
        ])),
    })
}

fn any_of(queries: Vec<Compiled>) -> Compiled {
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// Free text on one tokenized field: one token is a term, several are a phrase.
fn text_query(field: Field, text: &str) -> Compiled {
    let mut terms: Vec<Term> = tokenize_text(text)
        .iter()
        .map(|t| Term::from_field_text(field, t))
        .collect();
    match terms.len() {
        0 => Box::new(AllQuery),
        1 => Box::new(TermQuery::new(
            terms.remove(0),
            IndexRecordOption::WithFreqs,
        )),
        _ => Box::new(PhraseQuery::new(terms)),
    }
}

/// Tokens starting with `prefix` on a tokenized field (a phrase ending in a prefix if several).
fn text_prefix_query(field: Field, prefix: &str) -> Compiled {
    let mut terms: Vec<Term> = tokenize_text(prefix)
        .iter()
        .map(|t| Term::from_field_text(field, t))
        .collect();
    match terms.len() {
        0 => any_token(field),
        1 => prefix_range(terms.remove(0)),
        _ => Box::new(PhrasePrefixQuery::new(terms)),
    }
}

/// Documents with any token at all in a tokenized (not fast) field.
fn any_token(field: Field) -> Compiled {
    Box::new(InvertedIndexRangeQuery::new(
        Bound::Included(Term::from_field_text(field, "")),
        Bound::Unbounded,
    ))
}

/// All indexed string values starting with the value of `term` (a str term, plain or JSON).
fn prefix_range(term: Term) -> Compiled {
    let mut upper = term.clone();
    // No UTF-8 text contains the byte 0xFF, so every string with the prefix sorts below this.
    upper.append_bytes(&[0xFF]);
    Box::new(InvertedIndexRangeQuery::new(
        Bound::Included(term),
        Bound::Excluded(upper),
    ))
}

fn json_term(s: &LogSchema, path: &str) -> Term {
    Term::from_field_json_path(s.fields, path, true)
}

fn field_query(field: &str, value: &FieldValue, s: &LogSchema) -> Result<Compiled, CompileError> {
    let unsupported = |reason| CompileError::Unsupported {
        field: field.to_string(),
        reason,
    };
    match field {
        "ts" => {
            return Err(unsupported(
                "time is not part of the query text; use the `from` and `to` parameters",
            ));
        }
        "msg" => {
            return match value {
                FieldValue::Exact(text) => Ok(text_query(s.msg, text)),
                FieldValue::Prefix(prefix) => Ok(text_prefix_query(s.msg, prefix)),
                _ => Err(unsupported(
                    "is text; comparisons need a number field or `level`",
                )),
            };
        }
        "seq" => return seq_query(value, s),
        "level" => {
            if let Some(q) = level_query(value, s)? {
                return Ok(q);
            }
        }
        _ => {}
    }
    if let Some(f) = s.reserved_exact_field(field) {
        return match value {
            FieldValue::Exact(v) => Ok(term_query(Term::from_field_text(f, v))),
            FieldValue::Prefix(p) => Ok(prefix_range(Term::from_field_text(f, p))),
            _ => Err(unsupported(
                "holds text; comparisons work on numbers, `seq` and `level`",
            )),
        };
    }
    // Any other key lives in the `fields` JSON object.
    match value {
        FieldValue::Exact(v) => {
            let mut term = json_term(s, field);
            term.append_type_and_str(v);
            Ok(term_query(term))
        }
        FieldValue::Prefix(p) => {
            let mut term = json_term(s, field);
            term.append_type_and_str(p);
            Ok(prefix_range(term))
        }
        FieldValue::Compare(..) | FieldValue::Range { .. } => {
            let (lo, hi) = number_bounds(field, value)?;
            let bound = |b: Bound<f64>| {
                b.map(|x| {
                    let mut term = json_term(s, field);
                    term.append_type_and_fast_value(x);
                    term
                })
            };
            if matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
                // `x:[* TO *]`: any number under that key.
                return Ok(Box::new(RangeQuery::new(
                    bound(Bound::Included(f64::MIN)),
                    bound(Bound::Included(f64::MAX)),
                )));
            }
            Ok(Box::new(RangeQuery::new(bound(lo), bound(hi))))
        }
    }
}

/// The numeric bounds of a comparison or range; `Exact`/`Prefix` never get here.
fn number_bounds(
    field: &str,
    value: &FieldValue,
) -> Result<(Bound<f64>, Bound<f64>), CompileError> {
    let number = |o: &Operand| match o {
        Operand::Number(n) => Ok(*n),
        Operand::Word(w) => Err(CompileError::NotANumber {
            field: field.to_string(),
            value: w.clone(),
        }),
    };
    operand_bounds(value, number)
}

fn operand_bounds<T>(
    value: &FieldValue,
    convert: impl Fn(&Operand) -> Result<T, CompileError>,
) -> Result<(Bound<T>, Bound<T>), CompileError> {
    let end = |o: &Option<Operand>, inclusive: bool| -> Result<Bound<T>, CompileError> {
        Ok(match o {
            None => Bound::Unbounded,
            Some(o) if inclusive => Bound::Included(convert(o)?),
            Some(o) => Bound::Excluded(convert(o)?),
        })
    };
    Ok(match value {
        FieldValue::Compare(op, o) => {
            let x = convert(o)?;
            match op {
                CompareOp::Gt => (Bound::Excluded(x), Bound::Unbounded),
                CompareOp::Ge => (Bound::Included(x), Bound::Unbounded),
                CompareOp::Lt => (Bound::Unbounded, Bound::Excluded(x)),
                CompareOp::Le => (Bound::Unbounded, Bound::Included(x)),
            }
        }
        FieldValue::Range {
            lo,
            hi,
            lo_inclusive,
            hi_inclusive,
        } => (end(lo, *lo_inclusive)?, end(hi, *hi_inclusive)?),
        FieldValue::Exact(_) | FieldValue::Prefix(_) => (Bound::Unbounded, Bound::Unbounded),
    })
}

/// Inclusive integer bounds `[lo, hi]` for f64 bounds, or `None` when nothing fits in u64.
fn integer_bounds(lo: Bound<f64>, hi: Bound<f64>) -> Option<(u64, u64)> {
    // `as` from f64 to i128 saturates, and every u64 fits in i128.
    let lo = match lo {
        Bound::Unbounded => 0,
        Bound::Included(x) => x.ceil() as i128,
        Bound::Excluded(x) => x.floor() as i128 + 1,
    };
    let hi = match hi {
        Bound::Unbounded => u64::MAX as i128,
        Bound::Included(x) => x.floor() as i128,
        Bound::Excluded(x) => x.ceil() as i128 - 1,
    };
    let lo = lo.max(0);
    let hi = hi.min(u64::MAX as i128);
    (lo <= hi).then_some((lo as u64, hi as u64))
}

fn u64_range(field: Field, lo: u64, hi: u64) -> Compiled {
    Box::new(RangeQuery::new(
        Bound::Included(Term::from_field_u64(field, lo)),
        Bound::Included(Term::from_field_u64(field, hi)),
    ))
}

fn seq_query(value: &FieldValue, s: &LogSchema) -> Result<Compiled, CompileError> {
    match value {
        FieldValue::Exact(v) => match v.parse::<u64>() {
            Ok(n) => Ok(term_query(Term::from_field_u64(s.seq, n))),
            Err(_) => Err(CompileError::NotANumber {
                field: "seq".into(),
                value: v.clone(),
            }),
        },
        FieldValue::Prefix(_) => Err(CompileError::Unsupported {
            field: "seq".into(),
            reason: "is a number; use a comparison or a range instead of a prefix",
        }),
        _ => {
            let (lo, hi) = number_bounds("seq", value)?;
            Ok(match integer_bounds(lo, hi) {
                Some((lo, hi)) => u64_range(s.seq, lo, hi),
                None => Box::new(EmptyQuery),
            })
        }
    }
}

/// Comparisons and ranges on `level` by severity; `None` for exact and prefix matches, which
/// use the `level` text field like any other reserved key.
fn level_query(value: &FieldValue, s: &LogSchema) -> Result<Option<Compiled>, CompileError> {
    if matches!(value, FieldValue::Exact(_) | FieldValue::Prefix(_)) {
        return Ok(None);
    }
    let rank = |o: &Operand| {
        let name = o.to_string();
        level_rank(&name)
            .map(|r| r as f64)
            .ok_or(CompileError::UnknownLevel { name })
    };
    let (lo, hi) = operand_bounds(value, rank)?;
    let max = (LEVELS.len() - 1) as f64;
    let hi = match hi {
        Bound::Unbounded => Bound::Included(max),
        b => b,
    };
    Ok(Some(match integer_bounds(lo, hi) {
        Some((lo, hi)) => u64_range(s.level_num, lo, hi),
        None => Box::new(EmptyQuery),
    }))
}

fn exists_query(field: &str, s: &LogSchema) -> Result<Compiled, CompileError> {
    Ok(match field {
        "msg" => any_token(s.msg),
        "ts" | "seq" => Box::new(ExistsQuery::new(field.to_string(), false)),
        _ if s.reserved_exact_field(field).is_some() => {
            Box::new(ExistsQuery::new(field.to_string(), false))
        }
        _ => Box::new(ExistsQuery::new(format!("fields.{field}"), true)),
    })
}

#[cfg(test)]
mod tests;
