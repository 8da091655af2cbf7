//! Running searches: a query's filter plus a time range over the index, returning the
//! exact total and the newest hits, or the rows of a pipeline stage (`count by`, `top`,
//! `timechart`), and the histogram and facets the UI shows.
//!
//! Hits are rebuilt from the stored line, so a hit shows exactly the keys the event had,
//! plus `seq`, `ingest_ts` and `agent` from the collector.

mod aggregate;
mod time_range;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use serde::Serialize;
use spoor_query::{CompileError, ParseError, Stage, compile, parse_query};
use spoor_sdk::event::keys;
use spoor_sdk::logfmt::{ReadOptions, read_line};
use spoor_sdk::timestamp::format_timestamp;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::schema::Value;
use tantivy::{DateTime, DocAddress, Order, Searcher, TantivyDocument, Term};
use time::OffsetDateTime;

pub use aggregate::{Histogram, HistogramBucket};
pub use time_range::{TimeRangeError, parse_bound};

use crate::index::LogIndex;

/// Largest `limit` a search may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// A search as the API receives it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// Query text (may be empty).
    pub q: String,
    /// Lower time bound (inclusive), as text.
    pub from: Option<String>,
    /// Upper time bound (exclusive), as text.
    pub to: Option<String>,
    /// How many hits (default 100).
    pub limit: Option<usize>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Only events with `seq` at or above this (for tail).
    pub min_seq: Option<u64>,
    /// Order by position in the audit log instead of by event time (tail, context).
    pub by_seq: bool,
    /// Only hits strictly after this `(ts nanos, seq)` in the requested order (a cluster
    /// page's cursor, as the shard that holds it sees it).
    pub after: Option<(i64, u64)>,
    /// Make the page's last timestamp exact: when the page is full, the hits sharing its
    /// last timestamp are the ones with the highest (lowest, ascending) seqs, so that a
    /// cursor can continue from them without skipping any (cluster mode asks for this).
    pub seq_ties: bool,
}

/// What a search returns.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    /// Exact number of matching events.
    pub total: u64,
    /// Matching events, flat objects of their keys.
    pub hits: Vec<BTreeMap<String, serde_json::Value>>,
    /// Column names, when the query has a pipeline stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Rows, when the query has a pipeline stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<serde_json::Value>>>,
    /// Time spent, in milliseconds.
    pub took_ms: u64,
}

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query text does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The query parses but cannot run (unknown level, non-numeric comparison...).
    #[error("{0}")]
    Compile(#[from] CompileError),
    /// `from`/`to` are not times.
    #[error(transparent)]
    TimeRange(#[from] TimeRangeError),
    /// A parameter out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The index failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
}

impl SearchError {
    /// The query position of a parse error, for the caret the UI and CLI draw.
    pub fn position(&self) -> Option<usize> {
        match self {
            SearchError::Parse(e) => Some(e.position),
            _ => None,
        }
    }
}

/// Builds the tantivy query for a request: the compiled filter, the time range, `min_seq`.
pub(crate) fn build_query(
    index: &LogIndex,
    req: &SearchRequest,
) -> Result<(Box<dyn Query>, Vec<Stage>), SearchError> {
    let parsed = parse_query(&req.q)?;
    let filter = compile(&parsed, &index.schema)?;
    let now = OffsetDateTime::now_utc();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, filter)];
    let bound = |text: &Option<String>, inclusive: bool| -> Result<Bound<Term>, SearchError> {
        Ok(match text.as_deref().filter(|t| !t.trim().is_empty()) {
            None => Bound::Unbounded,
            Some(t) => {
                let ts = parse_bound(t, now)?;
                let nanos = i64::try_from(ts.unix_timestamp_nanos())
                    .map_err(|_| SearchError::BadRequest(format!("`{t}` is out of range")))?;
                let term =
                    Term::from_field_date(index.schema.ts, DateTime::from_timestamp_nanos(nanos));
                if inclusive {
                    Bound::Included(term)
                } else {
                    Bound::Excluded(term)
                }
            }
        })
    };
    let (lo, hi) = (bound(&req.from, true)?, bound(&req.to, false)?);
    if !matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
        clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
    }
    if let Some(min) = req.min_seq {
        let lo = Bound::Included(Term::from_field_u64(index.schema.seq, min));
        clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, Bound::Unbounded))));
    }
    if let Some((ts, seq)) = req.after {
        // (ts, seq) beyond the cursor: a later (earlier) time, or the same time and a
        // higher (lower) seq.
        let t = Term::from_field_date(index.schema.ts, DateTime::from_timestamp_nanos(ts));
        let s = Term::from_field_u64(index.schema.seq, seq);
        let (time, same_time_seq): (Box<dyn Query>, Box<dyn Query>) = if req.ascending {
            (
                Box::new(RangeQuery::new(
                    Bound::Excluded(t.clone()),
                    Bound::Unbounded,
                )),
                Box::new(RangeQuery::new(Bound::Excluded(s), Bound::Unbounded)),
            )
        } else {
            (
                Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Excluded(t.clone()),
                )),
                Box::new(RangeQuery::new(Bound::Unbounded, Bound::Excluded(s))),
            )
        };
        let same_time: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(t.clone()),
                    Bound::Included(t),
                )),
            ),
            (Occur::Must, same_time_seq),
        ]));
        clauses.push((
            Occur::Must,
            Box::new(BooleanQuery::new(vec![
                (Occur::Should, time),
                (Occur::Should, same_time),
            ])),
        ));
    }
    Ok((Box::new(BooleanQuery::new(clauses)), parsed.stages))
}

/// Runs a search.
pub fn search(index: &LogIndex, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
    let started = Instant::now();
    let limit = req.limit.unwrap_or(100);
    if limit > MAX_LIMIT {
        return Err(SearchError::BadRequest(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    let (query, stages) = build_query(index, req)?;
    let searcher = index.reader.searcher();
    if let Some(stage) = stages.first() {
        if stages.len() > 1 {
            return Err(SearchError::BadRequest(
                "only one pipeline stage is supported".into(),
            ));
        }
        let total = searcher.search(&query, &Count)? as u64;
        let (columns, rows) = aggregate::run_stage(index, &searcher, &*query, stage, total)?;
        return Ok(SearchResponse {
            total,
            hits: Vec::new(),
            columns: Some(columns),
            rows: Some(rows),
            took_ms: started.elapsed().as_millis() as u64,
        });
    }
    if limit == 0 {
        let total = searcher.search(&query, &Count)? as u64;
        return Ok(SearchResponse {
            total,
            hits: Vec::new(),
            columns: None,
            rows: None,
            took_ms: started.elapsed().as_millis() as u64,
        });
    }
    let order = if req.ascending {
        Order::Asc
    } else {
        Order::Desc
    };
    let (addresses, total): (Vec<DocAddress>, usize) = if req.by_seq {
        let top = TopDocs::with_limit(limit).order_by_fast_field::<u64>("seq", order);
        let (docs, total) = searcher.search(&query, &(top, Count))?;
        (docs.into_iter().map(|(_, a)| a).collect(), total)
    } else {
        let top = TopDocs::with_limit(limit).order_by_fast_field::<DateTime>("ts", order);
        let (docs, total) = searcher.search(&query, &(top, Count))?;
        (docs.into_iter().map(|(_, a)| a).collect(), total)
    };
    let full = addresses.len() == limit;
    let mut hits = Vec::with_capacity(addresses.len());
    for address in addresses {
        hits.push(hit(index, &searcher, address)?);
    }
    if req.seq_ties && full && !req.by_seq {
        exact_last_timestamp(index, &searcher, &*query, req, &mut hits)?;
    }
    let seq_of = |h: &BTreeMap<String, serde_json::Value>| {
        h.get(keys::SEQ)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<u64>().ok())
    };
    // Stable order within one timestamp: by seq, in the requested direction.
    hits.sort_by(|a, b| {
        let ta = a.get("_ts_nanos").and_then(|v| v.as_i64());
        let tb = b.get("_ts_nanos").and_then(|v| v.as_i64());
        let ord = if req.by_seq {
            seq_of(a).cmp(&seq_of(b))
        } else {
            ta.cmp(&tb).then(seq_of(a).cmp(&seq_of(b)))
        };
        if req.ascending { ord } else { ord.reverse() }
    });
    if !req.seq_ties {
        // Cluster mode keeps the exact time for the merge (which removes it).
        for h in &mut hits {
            h.remove("_ts_nanos");
        }
    }
    Ok(SearchResponse {
        total: total as u64,
        hits,
        columns: None,
        rows: None,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// A full page ends inside one timestamp: replaces the hits of that timestamp by the
/// ones with the highest (ascending: lowest) seqs, so the page is exactly the first
/// `limit` hits in `(ts, seq)` order.
fn exact_last_timestamp(
    index: &LogIndex,
    searcher: &Searcher,
    query: &dyn Query,
    req: &SearchRequest,
    hits: &mut Vec<BTreeMap<String, serde_json::Value>>,
) -> Result<(), SearchError> {
    let ts_of =
        |h: &BTreeMap<String, serde_json::Value>| h.get("_ts_nanos").and_then(|v| v.as_i64());
    let last = if req.ascending {
        hits.iter().filter_map(ts_of).max()
    } else {
        hits.iter().filter_map(ts_of).min()
    };
    let Some(last) = last else {
        return Ok(());
    };
    let before = hits.len();
    hits.retain(|h| ts_of(h) != Some(last));
    let need = before - hits.len();
    let t = Term::from_field_date(index.schema.ts, DateTime::from_timestamp_nanos(last));
    let at_last = BooleanQuery::new(vec![
        (Occur::Must, query.box_clone()),
        (
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Included(t.clone()),
                Bound::Included(t),
            )),
        ),
    ]);
    let order = if req.ascending {
        Order::Asc
    } else {
        Order::Desc
    };
    let top = TopDocs::with_limit(need).order_by_fast_field::<u64>("seq", order);
    for (_, address) in searcher.search(&at_last, &top)? {
        hits.push(hit(index, searcher, address)?);
    }
    Ok(())
}

/// Rebuilds one hit from its stored line.
fn hit(
    index: &LogIndex,
    searcher: &Searcher,
    address: DocAddress,
) -> Result<BTreeMap<String, serde_json::Value>, SearchError> {
    let doc: TantivyDocument = searcher.doc(address)?;
    let schema = &index.schema;
    let line = doc
        .get_first(schema.line)
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let (event, _) = read_line(
        line.as_bytes(),
        &ReadOptions {
            max_line_bytes: usize::MAX,
        },
    );
    let mut out = BTreeMap::new();
    for (k, v) in event.pairs() {
        out.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let ts = doc.get_first(schema.ts).and_then(|v| v.as_datetime());
    if let Some(ts) = ts {
        out.insert(
            "_ts_nanos".into(),
            serde_json::Value::from(ts.into_timestamp_nanos()),
        );
        out.entry(keys::TS.to_string())
            .or_insert_with(|| date_text(ts));
    }
    if let Some(seq) = doc.get_first(schema.seq).and_then(|v| v.as_u64()) {
        out.insert(keys::SEQ.into(), serde_json::Value::String(seq.to_string()));
    }
    if let Some(ingest) = doc
        .get_first(schema.ingest_ts)
        .and_then(|v| v.as_datetime())
    {
        out.insert(keys::INGEST_TS.into(), date_text(ingest));
    }
    Ok(out)
}

fn date_text(ts: DateTime) -> serde_json::Value {
    let nanos = i128::from(ts.into_timestamp_nanos());
    let text = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(format_timestamp)
        .unwrap_or_default();
    serde_json::Value::String(text)
}

/// Counts per time bucket split by level, for `GET /api/v1/histogram`. `buckets` is the
/// wanted number of buckets over the time range (default 60).
pub fn histogram(
    index: &LogIndex,
    req: &SearchRequest,
    buckets: Option<u32>,
) -> Result<Histogram, SearchError> {
    let (query, _) = build_query(index, req)?;
    let now = OffsetDateTime::now_utc();
    let from = match req.from.as_deref() {
        Some(t) => parse_bound(t, now)?,
        None => now - time::Duration::hours(1),
    };
    let to = match req.to.as_deref() {
        Some(t) => parse_bound(t, now)?,
        None => now,
    };
    let span_ms = u64::try_from((to - from).whole_milliseconds())
        .unwrap_or(0)
        .max(1);
    let interval_ms = (span_ms / u64::from(buckets.unwrap_or(60).clamp(1, 1000))).max(1);
    aggregate::histogram(&index.reader.searcher(), &*query, interval_ms)
}

/// The keys the UI shows facets for.
pub const FACET_FIELDS: [&str; 5] = ["level", "task", "host", "version", "kind"];

/// Top values of the common fields, for `GET /api/v1/fields`.
pub fn fields(
    index: &LogIndex,
    req: &SearchRequest,
) -> Result<serde_json::Map<String, serde_json::Value>, SearchError> {
    let (query, _) = build_query(index, req)?;
    aggregate::facets(index, &index.reader.searcher(), &*query, &FACET_FIELDS, 10)
}

/// Lines around one line, for `GET /api/v1/context`: from the same `task_id`, or when it
/// has none, from the same `host` and `source`; oldest first, the line itself included.
pub fn context(
    index: &LogIndex,
    seq: u64,
    before: usize,
    after: usize,
) -> Result<SearchResponse, SearchError> {
    let started = Instant::now();
    let anchor = search(
        index,
        &SearchRequest {
            q: format!("seq:{seq}"),
            limit: Some(1),
            ..Default::default()
        },
    )?;
    let Some(hit) = anchor.hits.into_iter().next() else {
        return Err(SearchError::BadRequest(format!("no line with seq {seq}")));
    };
    let quote = |v: &serde_json::Value| {
        let s = v
            .as_str()
            .unwrap_or_default()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        format!("\"{s}\"")
    };
    let scope = match hit.get(keys::TASK_ID) {
        Some(id) => format!("task_id:{}", quote(id)),
        None => {
            let mut parts = Vec::new();
            for key in [keys::HOST, keys::SOURCE] {
                match hit.get(key) {
                    Some(v) => parts.push(format!("{key}:{}", quote(v))),
                    None => parts.push(format!("-_exists_:{key}")),
                }
            }
            parts.join(" ")
        }
    };
    let older = search(
        index,
        &SearchRequest {
            q: format!("{scope} seq:<{seq}"),
            limit: Some(before),
            ascending: false,
            by_seq: true,
            ..Default::default()
        },
    )?;
    let newer = search(
        index,
        &SearchRequest {
            q: format!("{scope} seq:>{seq}"),
            limit: Some(after),
            ascending: true,
            by_seq: true,
            ..Default::default()
        },
    )?;
    let mut hits: Vec<_> = older.hits.into_iter().rev().collect();
    hits.push(hit);
    hits.extend(newer.hits);
    Ok(SearchResponse {
        total: hits.len() as u64,
        hits,
        columns: None,
        rows: None,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditOptions};

    /// An index of `n` lines that all share one timestamp (as a batch without `ts` does).
    fn same_time_index(n: usize) -> (tempfile::TempDir, LogIndex) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path(), AuditOptions::default()).unwrap();
        let lines: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("ts=2026-01-01T00:00:00Z level=info i={i}").into_bytes())
            .collect();
        log.append_batch("", "a", 0, &lines).unwrap();
        log.sync().unwrap();
        log.close().unwrap();
        crate::index::rebuild(dir.path(), 16 << 20, &mut |_| {}).unwrap();
        let index = LogIndex::open(dir.path()).unwrap();
        (dir, index)
    }

    fn seqs(resp: &SearchResponse) -> Vec<u64> {
        resp.hits
            .iter()
            .map(|h| h["seq"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn pages_within_one_timestamp_follow_seq_exactly() {
        let (_dir, index) = same_time_index(50);
        let ts = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
        let mut req = SearchRequest {
            limit: Some(7),
            seq_ties: true,
            ..SearchRequest::default()
        };
        let mut all = Vec::new();
        loop {
            let page = search(&index, &req).unwrap();
            assert_eq!(page.total as usize, 50 - all.len());
            let s = seqs(&page);
            if s.is_empty() {
                break;
            }
            assert!(page.hits.iter().all(|h| h["_ts_nanos"] == ts));
            req.after = Some((ts, *s.last().unwrap()));
            all.extend(s);
        }
        assert_eq!(all, (0..50).rev().collect::<Vec<u64>>());
        // Oldest first, the mirror image.
        req.ascending = true;
        req.after = Some((ts, 44));
        assert_eq!(seqs(&search(&index, &req).unwrap()), [45, 46, 47, 48, 49]);
    }
}
