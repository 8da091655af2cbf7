//! Pipeline stages, the histogram and facets, run as tantivy aggregations over fast fields.

use serde::Serialize;
use serde_json::{Value, json};
use spoor_query::{LogSchema, Stage};
use tantivy::Searcher;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::agg_result::AggregationResults;
use tantivy::aggregation::{AggContextParams, AggregationCollector};
use tantivy::query::Query;

use super::SearchError;
use crate::index::LogIndex;

/// Most distinct values a `count by` or facet returns.
const MAX_GROUPS: u32 = 10_000;

/// The fast-field name for a key: its own column for reserved exact keys, else a path in
/// the `fields` JSON column.
fn column(schema: &LogSchema, key: &str) -> String {
    if schema.reserved_exact_field(key).is_some() {
        key.to_string()
    } else {
        format!("fields.{key}")
    }
}

fn run(searcher: &Searcher, query: &dyn Query, request: Value) -> Result<Value, SearchError> {
    let aggs: Aggregations = serde_json::from_value(request)
        .map_err(|e| SearchError::BadRequest(format!("aggregation: {e}")))?;
    let collector = AggregationCollector::from_aggs(aggs, AggContextParams::default());
    let result: AggregationResults = searcher.search(query, &collector)?;
    serde_json::to_value(result).map_err(|e| SearchError::BadRequest(format!("aggregation: {e}")))
}

fn terms(field: &str, size: u32) -> Value {
    json!({ "terms": { "field": field, "size": size, "order": { "_count": "desc" } } })
}

/// Nested `terms` aggregations, one level per field, named `g0`, `g1`...
fn nested_terms(schema: &LogSchema, fields: &[String], size: u32) -> Value {
    let mut agg: Option<Value> = None;
    for (depth, field) in fields.iter().enumerate().rev() {
        let mut t = terms(&column(schema, field), size);
        if let Some(inner) = agg.take() {
            t["aggs"] = json!({ format!("g{}", depth + 1): inner });
        }
        agg = Some(t);
    }
    json!({ "g0": agg.unwrap_or(Value::Null) })
}

/// Flattens nested terms buckets into rows of `[value, value, ..., count]`.
fn flatten(
    result: &Value,
    depth: usize,
    levels: usize,
    prefix: &mut Vec<Value>,
    rows: &mut Vec<Vec<Value>>,
) {
    let Some(buckets) = result[format!("g{depth}")]["buckets"].as_array() else {
        return;
    };
    for b in buckets {
        prefix.push(key_value(&b["key"]));
        if depth + 1 == levels {
            let mut row = prefix.clone();
            row.push(b["doc_count"].clone());
            rows.push(row);
        } else {
            flatten(b, depth + 1, levels, prefix, rows);
        }
        prefix.pop();
    }
}

fn key_value(key: &Value) -> Value {
    match key {
        Value::String(s) => Value::String(s.clone()),
        Value::Number(n) => Value::String(n.to_string()),
        other => Value::String(other.to_string()),
    }
}

/// Runs one pipeline stage; returns column names and rows.
pub(super) fn run_stage(
    index: &LogIndex,
    searcher: &Searcher,
    query: &dyn Query,
    stage: &Stage,
    total: u64,
) -> Result<(Vec<String>, Vec<Vec<Value>>), SearchError> {
    let schema = &index.schema;
    match stage {
        Stage::Count => Ok((vec!["count".into()], vec![vec![json!(total)]])),
        Stage::CountBy(fields) => {
            let result = run(searcher, query, nested_terms(schema, fields, MAX_GROUPS))?;
            let mut rows = Vec::new();
            flatten(&result, 0, fields.len(), &mut Vec::new(), &mut rows);
            let mut columns = fields.clone();
            columns.push("count".into());
            Ok((columns, rows))
        }
        Stage::Top { n, field } => {
            let size = u32::try_from(*n).unwrap_or(MAX_GROUPS).min(MAX_GROUPS);
            let result = run(
                searcher,
                query,
                nested_terms(schema, std::slice::from_ref(field), size),
            )?;
            let mut rows = Vec::new();
            flatten(&result, 0, 1, &mut Vec::new(), &mut rows);
            Ok((vec![field.clone(), "count".into()], rows))
        }
        Stage::Timechart { span, by } => {
            let secs = span.duration().as_secs().max(1);
            let mut hist = json!({ "date_histogram": { "field": "ts", "fixed_interval": format!("{secs}s") } });
            if let Some(by) = by {
                hist["aggs"] = json!({ "g1": terms(&column(schema, by), MAX_GROUPS) });
            }
            let result = run(searcher, query, json!({ "t": hist }))?;
            let mut rows = Vec::new();
            for b in result["t"]["buckets"].as_array().into_iter().flatten() {
                let time = b["key_as_string"].clone();
                match by {
                    None => rows.push(vec![time, b["doc_count"].clone()]),
                    Some(_) => {
                        for g in b["g1"]["buckets"].as_array().into_iter().flatten() {
                            rows.push(vec![
                                time.clone(),
                                key_value(&g["key"]),
                                g["doc_count"].clone(),
                            ]);
                        }
                    }
                }
            }
            let mut columns = vec!["time".to_string()];
            columns.extend(by.iter().cloned());
            columns.push("count".into());
            Ok((columns, rows))
        }
    }
}

/// Counts per time bucket, split by level.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// Bucket width in milliseconds.
    pub interval_ms: u64,
    /// Buckets in time order.
    pub buckets: Vec<HistogramBucket>,
}

/// One bucket of the histogram.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramBucket {
    /// Bucket start, RFC 3339.
    pub time: String,
    /// Bucket start, milliseconds since the epoch.
    pub time_ms: i64,
    /// All matching events in the bucket.
    pub count: u64,
    /// Per level (events without a level are counted under `none`).
    pub levels: serde_json::Map<String, Value>,
}

/// Runs the histogram aggregation with the given bucket width.
pub(super) fn histogram(
    searcher: &Searcher,
    query: &dyn Query,
    interval_ms: u64,
) -> Result<Histogram, SearchError> {
    let req = json!({ "t": {
        "date_histogram": { "field": "ts", "fixed_interval": format!("{}ms", interval_ms.max(1)) },
        "aggs": { "l": { "terms": { "field": "level", "size": 16, "missing": "none" } } }
    }});
    let result = run(searcher, query, req)?;
    let buckets = result["t"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let mut levels = serde_json::Map::new();
            for l in b["l"]["buckets"].as_array().into_iter().flatten() {
                levels.insert(
                    key_value(&l["key"])
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    l["doc_count"].clone(),
                );
            }
            HistogramBucket {
                time: b["key_as_string"].as_str().unwrap_or_default().to_string(),
                time_ms: b["key"].as_f64().unwrap_or(0.0) as i64,
                count: b["doc_count"].as_u64().unwrap_or(0),
                levels,
            }
        })
        .collect();
    Ok(Histogram {
        interval_ms,
        buckets,
    })
}

/// The most frequent values of each of `fields`.
pub(super) fn facets(
    index: &LogIndex,
    searcher: &Searcher,
    query: &dyn Query,
    fields: &[&str],
    size: u32,
) -> Result<serde_json::Map<String, Value>, SearchError> {
    let mut req = serde_json::Map::new();
    for f in fields {
        req.insert((*f).to_string(), terms(&column(&index.schema, f), size));
    }
    let result = run(searcher, query, Value::Object(req))?;
    let mut out = serde_json::Map::new();
    for f in fields {
        let values: Vec<Value> = result[*f]["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| json!({ "value": key_value(&b["key"]), "count": b["doc_count"] }))
            .collect();
        out.insert((*f).to_string(), Value::Array(values));
    }
    Ok(out)
}
