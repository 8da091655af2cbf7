//! The tantivy index schema for events, and the "spoor_text" tokenizer.
//!
//! Owned here because compiling a query needs to know how each key was indexed; the collector
//! builds documents and indexes with it. Layout:
//!
//! | field | type | how |
//! |---|---|---|
//! | `ts` | date, nanoseconds | indexed, fast, stored |
//! | `seq` | u64 | indexed, fast, stored |
//! | `level_num` | u64 (trace=0 … fatal=5, see [`level_rank`]) | indexed, fast |
//! | `level`, `task`, `task_id`, `host`, `version`, `kind`, `agent`, `source`, `instance` | text, "raw" tokenizer (whole value) | indexed, fast |
//! | `msg` | text, "spoor_text", positions | indexed, not stored |
//! | `line` | the raw logfmt line, "spoor_text", positions | indexed, stored |
//! | `fields` | JSON of every other key, "raw" tokenizer, dots expanded | indexed, fast |
//!
//! Every other key of an event goes into `fields`, with each value built by
//! [`json_value_for`]: a value that reads as a number is indexed both as the string (for exact
//! matches) and as a number (for ranges).
//!
//! Invariant: an index built with this schema must have [`register_tokenizers`] called on it
//! before documents are added or queries run, or "spoor_text" is unknown to tantivy.

use tantivy::Index;
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions,
    STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, SimpleTokenizer, TextAnalyzer, TokenStream};

/// The name of the free-text tokenizer: split on every non-alphanumeric character, lowercase.
pub const TEXT_TOKENIZER: &str = "spoor_text";

/// Level names in severity order; the index in this list is the `level_num`.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];

/// The severity rank of a level name (ASCII case-insensitive): trace=0 … fatal=5.
pub fn level_rank(name: &str) -> Option<u64> {
    LEVELS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(name))
        .map(|p| p as u64)
}

/// The event schema with a handle for every field.
#[derive(Debug, Clone)]
pub struct LogSchema {
    /// The tantivy schema itself.
    pub schema: Schema,
    /// Event time (`ts`), nanosecond precision.
    pub ts: Field,
    /// Position in the audit log.
    pub seq: Field,
    /// When the collector accepted the line (stored and fast, for hits and retention).
    pub ingest_ts: Field,
    /// The level as written (`error`).
    pub level: Field,
    /// The level's rank, for `level:>=warn`.
    pub level_num: Field,
    /// The message, tokenized.
    pub msg: Field,
    /// The whole raw line, tokenized and stored.
    pub line: Field,
    /// Every non-reserved key, as JSON.
    pub fields: Field,
    /// Task name.
    pub task: Field,
    /// One run of a task.
    pub task_id: Field,
    /// Host the event came from.
    pub host: Field,
    /// Task code version.
    pub version: Field,
    /// `log`, `deadletter`, `audit` or `alert`.
    pub kind: Field,
    /// The agent that forwarded the event.
    pub agent: Field,
    /// The agent input that read it (socket, syslog, file).
    pub source: Field,
    /// Instance id.
    pub instance: Field,
}

impl Default for LogSchema {
    fn default() -> Self {
        LogSchema::new()
    }
}

impl LogSchema {
    /// Builds the schema.
    pub fn new() -> LogSchema {
        let mut b = Schema::builder();
        let ts = b.add_date_field(
            "ts",
            DateOptions::from(INDEXED | FAST | STORED)
                .set_precision(DateTimePrecision::Nanoseconds),
        );
        let seq = b.add_u64_field("seq", INDEXED | FAST | STORED);
        let ingest_ts = b.add_date_field(
            "ingest_ts",
            DateOptions::from(FAST | STORED).set_precision(DateTimePrecision::Nanoseconds),
        );
        let level_num = b.add_u64_field("level_num", INDEXED | FAST);
        let exact = || {
            TextOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_fieldnorms(false)
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_fast("raw")
        };
        let text = TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let level = b.add_text_field("level", exact());
        let msg = b.add_text_field(
            "msg",
            TextOptions::default().set_indexing_options(text.clone()),
        );
        let line = b.add_text_field(
            "line",
            TextOptions::default()
                .set_indexing_options(text)
                .set_stored(),
        );
        let fields = b.add_json_field(
            "fields",
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_fieldnorms(false)
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_fast("raw")
                .set_expand_dots_enabled(),
        );
        let task = b.add_text_field("task", exact());
        let task_id = b.add_text_field("task_id", exact());
        let host = b.add_text_field("host", exact());
        let version = b.add_text_field("version", exact());
        let kind = b.add_text_field("kind", exact());
        let agent = b.add_text_field("agent", exact());
        let source = b.add_text_field("source", exact());
        let instance = b.add_text_field("instance", exact());
        LogSchema {
            schema: b.build(),
            ts,
            seq,
            ingest_ts,
            level,
            level_num,
            msg,
            line,
            fields,
            task,
            task_id,
            host,
            version,
            kind,
            agent,
            source,
            instance,
        }
    }

    /// The dedicated field for a reserved key matched by whole value (`level`, `task`,
    /// `task_id`, `host`, `version`, `kind`, `agent`, `source`, `instance`), if `name` is one.
    pub fn reserved_exact_field(&self, name: &str) -> Option<Field> {
        Some(match name {
            "level" => self.level,
            "task" => self.task,
            "task_id" => self.task_id,
            "host" => self.host,
            "version" => self.version,
            "kind" => self.kind,
            "agent" => self.agent,
            "source" => self.source,
            "instance" => self.instance,
            _ => return None,
        })
    }
}

/// Registers the "spoor_text" tokenizer on an index. Call once after opening or creating it.
pub fn register_tokenizers(index: &Index) {
    index.tokenizers().register(TEXT_TOKENIZER, text_analyzer());
}

fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .build()
}

/// Splits text the way "spoor_text" does: on every non-alphanumeric character, lowercased.
///
/// ```
/// assert_eq!(spoor_query::tokenize_text("Failed password for root"), ["failed", "password", "for", "root"]);
/// assert_eq!(spoor_query::tokenize_text("dl-bar_001"), ["dl", "bar", "001"]);
/// ```
pub fn tokenize_text(s: &str) -> Vec<String> {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(s);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The JSON value to put under a key in `fields` for a string value from the wire.
///
/// A value that is a JSON number (`250`, `-1.5`, `1e3`, no surrounding spaces) becomes the array
/// `["250", 250]`, so `latency_ms:250` matches the string exactly and `latency_ms:>200` matches
/// the number. Anything else stays a plain string.
pub fn json_value_for(v: &str) -> serde_json::Value {
    match numeric(v) {
        Some(n) => serde_json::Value::Array(vec![
            serde_json::Value::String(v.to_string()),
            serde_json::Value::Number(n),
        ]),
        None => serde_json::Value::String(v.to_string()),
    }
}

/// [`json_value_for`] built straight as a tantivy value, as the indexer needs it (going
/// through `serde_json::Value` costs an extra copy of every field on the indexing path).
pub fn index_value_for(v: &str) -> tantivy::schema::OwnedValue {
    use tantivy::schema::OwnedValue;
    let Some(n) = numeric(v) else {
        return OwnedValue::Str(v.to_string());
    };
    // The same mapping as tantivy's `From<serde_json::Value>`, so queries see one shape.
    let number = if let Some(i) = n.as_i64() {
        OwnedValue::I64(i)
    } else if let Some(u) = n.as_u64() {
        OwnedValue::U64(u)
    } else {
        OwnedValue::F64(n.as_f64().unwrap_or(f64::NAN))
    };
    OwnedValue::Array(vec![OwnedValue::Str(v.to_string()), number])
}

/// The number a wire value reads as, if it is a plain JSON number.
fn numeric(v: &str) -> Option<serde_json::Number> {
    let looks_numeric = v
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit())
        && v.trim() == v;
    if !looks_numeric {
        return None;
    }
    serde_json::from_str::<serde_json::Number>(v).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn levels_rank_in_severity_order() {
        assert_eq!(level_rank("trace"), Some(0));
        assert_eq!(level_rank("WARN"), Some(3));
        assert_eq!(level_rank("fatal"), Some(5));
        assert_eq!(level_rank("warning"), None);
    }

    #[test]
    fn text_tokenizer_splits_on_punctuation_and_lowercases() {
        assert_eq!(
            tokenize_text("Failed password for invalid user admin from 10.0.0.5 port 22"),
            [
                "failed", "password", "for", "invalid", "user", "admin", "from", "10", "0", "0",
                "5", "port", "22"
            ]
        );
        assert_eq!(tokenize_text("Ünïcode_ok"), ["ünïcode", "ok"]);
        assert!(tokenize_text(" -- ").is_empty());
    }

    #[test]
    fn numbers_are_kept_as_strings_and_numbers() {
        assert_eq!(json_value_for("250"), json!(["250", 250]));
        assert_eq!(json_value_for("-1.5"), json!(["-1.5", -1.5]));
        assert_eq!(json_value_for("007"), json!("007"));
        assert_eq!(json_value_for("abc"), json!("abc"));
        assert_eq!(json_value_for(" 1"), json!(" 1"));
        for v in ["250", "-1.5", "1e3", "007", "abc", "18446744073709551615"] {
            assert_eq!(
                index_value_for(v),
                tantivy::schema::OwnedValue::from(json_value_for(v)),
                "{v}"
            );
        }
        assert_eq!(json_value_for("NaN"), json!("NaN"));
        assert_eq!(json_value_for(""), json!(""));
    }

    #[test]
    fn reserved_exact_fields() {
        let s = LogSchema::new();
        assert_eq!(s.reserved_exact_field("host"), Some(s.host));
        assert_eq!(s.reserved_exact_field("msg"), None);
        assert_eq!(s.reserved_exact_field("latency_ms"), None);
    }
}
