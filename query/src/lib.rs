//! spoor's query language: what users type into `spoor search`, the web UI and alert rules.
//!
//! This crate owns three things:
//! - the language: [`parse_query`] turns text into a [`Query`] (an [`Expr`] filter plus
//!   pipeline [`Stage`]s), and `Display` prints a query back in a form that parses to the same
//!   AST;
//! - the index [`LogSchema`]: how each key of an event is indexed in tantivy, and the
//!   "spoor_text" tokenizer ([`tokenize_text`], [`register_tokenizers`]);
//! - compiling: [`compile`] turns a query's filter into a tantivy query over that schema,
//!   leaving the collector's own `kind=audit` records out unless the query names them.
//!
//! It leaves to others: building documents and running searches (the collector's index and
//! search modules), executing pipeline stages such as `count by` and `timechart` (the
//! collector), and time ranges, which are separate `from`/`to` parameters, not query text.
//!
//! ```
//! use spoor_query::{compile, parse_query, LogSchema};
//!
//! let schema = LogSchema::new();
//! let query = parse_query("level:>=warn task:charge -timeout | count by host").unwrap();
//! assert_eq!(query.to_string(), "level:>=warn task:charge -timeout | count by host");
//! let tantivy_query = compile(&query, &schema).unwrap();
//! # let _ = tantivy_query;
//! ```
//!
//! Errors: [`ParseError`] carries a position and renders a caret under it;
//! [`CompileError`] says which field and why.

mod ast;
pub mod client;
mod compile;
mod parse;
mod schema;

pub use ast::{CompareOp, Expr, FieldValue, Operand, Query, Span, SpanUnit, Stage, is_field_name};
pub use compile::{CompileError, compile, mentions_audit};
pub use parse::{MAX_DEPTH, ParseError, parse_query};
pub use schema::{
    LEVELS, LogSchema, TEXT_TOKENIZER, index_value_for, json_value_for, level_rank,
    register_tokenizers, tokenize_text,
};
