//! One audit record → one tantivy document, following the schema of `spoor-query`.

use spoor_query::{LogSchema, index_value_for, level_rank};
use spoor_sdk::event::{Level, keys};
use spoor_sdk::logfmt::{ReadOptions, read_line};
use tantivy::schema::OwnedValue;
use tantivy::{DateTime, TantivyDocument};

use crate::audit::AuditRecord;

/// Keys the collector keeps in their own fields rather than in `fields`.
const OWN_FIELDS: [&str; 3] = [keys::TS, keys::LEVEL, keys::MSG];

/// Builds the document for a record. The event's `ts` decides its place in time; a line
/// without a readable `ts` gets the ingest time. `agent` falls back to the record's agent.
pub fn build_document(schema: &LogSchema, record: &AuditRecord) -> TantivyDocument {
    let (event, _) = read_line(
        &record.line,
        &ReadOptions {
            max_line_bytes: usize::MAX,
        },
    );
    let mut doc = TantivyDocument::new();
    let ingest = DateTime::from_timestamp_nanos(record.ingest_ts_nanos);
    let ts = match event.timestamp() {
        Some(Ok(t)) => DateTime::from_timestamp_nanos(
            i64::try_from(t.unix_timestamp_nanos()).unwrap_or(record.ingest_ts_nanos),
        ),
        _ => ingest,
    };
    doc.add_date(schema.ts, ts);
    doc.add_date(schema.ingest_ts, ingest);
    doc.add_u64(schema.seq, record.seq);
    if let Some(level) = event.get(keys::LEVEL) {
        // Known aliases (`WARNING`, `err`) are indexed under the canonical name.
        let canonical = level.parse::<Level>().map(Level::as_str).unwrap_or(level);
        doc.add_text(schema.level, canonical);
        if let Some(rank) = level_rank(canonical) {
            doc.add_u64(schema.level_num, rank);
        }
    }
    if let Some(msg) = event.get(keys::MSG) {
        doc.add_text(schema.msg, msg);
    }
    doc.add_text(schema.line, String::from_utf8_lossy(&record.line));
    doc.add_text(schema.kind, event.get(keys::KIND).unwrap_or("log"));
    doc.add_text(
        schema.agent,
        event.get(keys::AGENT).unwrap_or(&record.agent),
    );
    let mut json: Vec<(String, OwnedValue)> = Vec::new();
    for (key, value) in event.pairs() {
        if OWN_FIELDS.contains(&key) || key == keys::KIND || key == keys::AGENT {
            continue;
        }
        match schema.reserved_exact_field(key) {
            Some(field) => doc.add_text(field, value),
            // Last value wins, as for lookups.
            None => match json.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = index_value_for(value),
                None => json.push((key.to_string(), index_value_for(value))),
            },
        }
    }
    if !json.is_empty() {
        doc.add_field_value(schema.fields, &OwnedValue::Object(json));
    }
    doc
}
