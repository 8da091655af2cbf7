//! Reads in cluster mode: the collector that got the request asks the owner of every
//! shard (its `advertise_url`, with the [`SHARD_HEADER`](super::SHARD_HEADER) so the owner
//! answers from that shard's copy instead of fanning out again) and merges the answers.
//!
//! - Search hits are merged by `(ts, shard, seq)`, newest first unless `order=asc`; `seq`
//!   is the position in the shard's chain, so the order is total and the same on every
//!   collector. Each hit carries its `shard`. A full page returns a `cursor` (the last
//!   hit's key); passing it back returns the hits strictly after it.
//! - Histograms are summed bucket by bucket; facets value by value.
//! - A shard whose owner is unknown, unreachable, slow or failing is listed in
//!   `missing_shards` with the reason; the rest is answered (HTTP 200).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Cluster, SHARD_HEADER};

/// One shard's answer: the JSON body, or why there is none.
pub type ShardReply = (u32, Result<Value, String>);

/// The position of a hit in the merged order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HitKey {
    /// Event time, nanoseconds since the epoch.
    pub ts: i128,
    /// Its shard.
    pub shard: u32,
    /// Its seq in the shard's chain.
    pub seq: u64,
}

impl HitKey {
    /// Reads a cursor (`<ts nanos>_<shard>_<seq>`).
    pub fn parse(text: &str) -> Option<HitKey> {
        let mut it = text.split('_');
        let key = HitKey {
            ts: it.next()?.parse().ok()?,
            shard: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(key)
    }

    /// The cursor text.
    pub fn to_cursor(self) -> String {
        format!("{}_{}_{}", self.ts, self.shard, self.seq)
    }

    /// The `(ts, seq)` bound that shard `shard` applies locally so that it returns only
    /// hits after this key in the merged order (newest first unless `ascending`).
    pub fn after_for(self, shard: u32, ascending: bool) -> (i64, u64) {
        let t = i64::try_from(self.ts).unwrap_or(if self.ts < 0 { i64::MIN } else { i64::MAX });
        use std::cmp::Ordering::*;
        match (shard.cmp(&self.shard), ascending) {
            (Equal, _) => (t, self.seq),
            // Newest first: lower shards may still give hits at this very time, higher
            // shards only earlier ones.
            (Less, false) => (t.saturating_add(1), 0),
            (Greater, false) => (t, 0),
            // Oldest first: the mirror image.
            (Less, true) => (t, u64::MAX),
            (Greater, true) => (t.saturating_sub(1), u64::MAX),
        }
    }

    fn of(shard: u32, hit: &Value) -> HitKey {
        let time = |k: &str| {
            hit.get(k)
                .and_then(Value::as_str)
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .map(OffsetDateTime::unix_timestamp_nanos)
        };
        let exact = hit.get("_ts_nanos").and_then(Value::as_i64).map(i128::from);
        HitKey {
            ts: exact
                .or_else(|| time("ts"))
                .or_else(|| time("ingest_ts"))
                .unwrap_or(0),
            shard,
            seq: hit
                .get("seq")
                .and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or(s.as_u64()))
                .unwrap_or(0),
        }
    }
}

impl Cluster {
    /// Sends `GET path?query` to the owner of every shard, at once, with the caller's
    /// `Authorization` (or, for the collector's own reads, the peer token).
    pub async fn ask_owners(
        &self,
        path: &str,
        query: &[(String, String)],
        authorization: Option<&str>,
    ) -> Vec<ShardReply> {
        self.ask_owners_each(path, |_| query.to_vec(), authorization)
            .await
    }

    /// Like [`Cluster::ask_owners`], with a query string per shard.
    pub async fn ask_owners_each(
        &self,
        path: &str,
        query: impl Fn(u32) -> Vec<(String, String)>,
        authorization: Option<&str>,
    ) -> Vec<ShardReply> {
        let urls = self.owner_urls();
        let asks = urls.into_iter().enumerate().map(|(shard, url)| {
            let shard = shard as u32;
            let http = self.http.clone();
            let path = path.to_string();
            let query = query(shard);
            let authorization = authorization
                .map(str::to_string)
                .or_else(|| self.peer_authorization.clone());
            async move {
                let Some(url) = url else {
                    return (shard, Err("no owner holds the shard's lease".to_string()));
                };
                let mut req = http
                    .get(format!("{}{path}", url.trim_end_matches('/')))
                    .query(&query)
                    .header(SHARD_HEADER, shard.to_string());
                if let Some(a) = authorization {
                    req = req.header("authorization", a);
                }
                let answer = async {
                    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
                    let status = resp.status();
                    let body: Value = resp
                        .json()
                        .await
                        .map_err(|e| format!("{url}: unreadable answer: {e}"))?;
                    if status.is_success() {
                        Ok(body)
                    } else {
                        Err(format!(
                            "{url}: {status}: {}",
                            body.get("error").and_then(Value::as_str).unwrap_or("")
                        ))
                    }
                };
                (shard, answer.await)
            }
        });
        let handles: Vec<_> = asks.map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for (shard, h) in handles.into_iter().enumerate() {
            out.push(
                h.await
                    .unwrap_or_else(|e| (shard as u32, Err(format!("ask failed: {e}")))),
            );
        }
        out
    }
}

/// Live tail of every shard: one task per shard follows its owner's
/// `/api/v1/tail` (server-sent events) and forwards each hit, with its `shard`, in the
/// order they arrive (there is no global order of live lines). A task whose owner goes
/// away reconnects to the shard's next owner; lines indexed meanwhile are not replayed.
/// The tasks end when the receiver is dropped.
pub fn tail(
    cluster: std::sync::Arc<Cluster>,
    query: Vec<(String, String)>,
    authorization: Option<&str>,
) -> tokio::sync::mpsc::Receiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let authorization = authorization
        .map(str::to_string)
        .or_else(|| cluster.peer_authorization.clone());
    for shard in 0..cluster.config.shards {
        let cluster = cluster.clone();
        let tx = tx.clone();
        let query = query.clone();
        let authorization = authorization.clone();
        // No timeout: the stream is long-lived.
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            loop {
                let url = cluster.owner_urls().get(shard as usize).cloned().flatten();
                if let Some(url) = url {
                    let mut req = http
                        .get(format!("{}/api/v1/tail", url.trim_end_matches('/')))
                        .query(&query)
                        .header(SHARD_HEADER, shard.to_string());
                    if let Some(a) = &authorization {
                        req = req.header("authorization", a);
                    }
                    if let Ok(mut resp) = req.send().await
                        && resp.status().is_success()
                    {
                        let mut buf: Vec<u8> = Vec::new();
                        loop {
                            let chunk = tokio::select! {
                                c = resp.chunk() => c,
                                _ = tx.closed() => return,
                            };
                            let Ok(Some(chunk)) = chunk else { break };
                            buf.extend_from_slice(&chunk);
                            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                                let block: Vec<u8> = buf.drain(..end + 2).collect();
                                for line in block.split(|&b| b == b'\n') {
                                    let Some(data) = line.strip_prefix(b"data:") else {
                                        continue;
                                    };
                                    let Ok(mut hit) =
                                        serde_json::from_slice::<Value>(data.trim_ascii())
                                    else {
                                        continue;
                                    };
                                    if let Some(o) = hit.as_object_mut() {
                                        o.insert("shard".into(), json!(shard));
                                    }
                                    if tx.send(hit).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
    }
    rx
}

/// The `shards` and `missing_shards` of a merged answer; the bodies that did answer.
pub(crate) fn split(replies: Vec<ShardReply>, out: &mut Map<String, Value>) -> Vec<(u32, Value)> {
    let total = replies.len();
    let mut missing = Vec::new();
    let mut ok = Vec::new();
    for (shard, r) in replies {
        match r {
            Ok(v) => ok.push((shard, v)),
            Err(e) => missing.push(json!({ "shard": shard, "error": e })),
        }
    }
    out.insert(
        "shards".into(),
        json!({ "total": total, "answered": ok.len() }),
    );
    out.insert("missing_shards".into(), Value::Array(missing));
    ok
}

/// Merges search answers: hits by `(ts, shard, seq)` after `cursor`, at most `limit`;
/// totals summed; pipeline rows summed on their last (count) column.
pub fn merge_search(
    replies: Vec<ShardReply>,
    ascending: bool,
    limit: usize,
    cursor: Option<HitKey>,
) -> Value {
    let mut out = Map::new();
    let answered = split(replies, &mut out);
    let mut total = 0u64;
    let mut took = 0u64;
    let mut hits: Vec<(HitKey, Value)> = Vec::new();
    let mut columns: Option<Value> = None;
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for (shard, body) in answered {
        total += body["total"].as_u64().unwrap_or(0);
        took = took.max(body["took_ms"].as_u64().unwrap_or(0));
        for hit in body["hits"].as_array().into_iter().flatten() {
            let mut hit = hit.clone();
            let key = HitKey::of(shard, &hit);
            if let Some(o) = hit.as_object_mut() {
                o.remove("_ts_nanos");
                o.insert("shard".into(), json!(shard));
            }
            let after = match cursor {
                None => true,
                Some(c) if ascending => key > c,
                Some(c) => key < c,
            };
            if after {
                hits.push((key, hit));
            }
        }
        if let Some(c) = body.get("columns") {
            columns = Some(c.clone());
            for row in body["rows"].as_array().into_iter().flatten() {
                if let Some(row) = row.as_array() {
                    add_row(&mut rows, row);
                }
            }
        }
    }
    if ascending {
        hits.sort_by_key(|(k, _)| *k);
    } else {
        hits.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    }
    hits.truncate(limit);
    let next = (hits.len() == limit && limit > 0)
        .then(|| hits.last().map(|(k, _)| k.to_cursor()))
        .flatten();
    out.insert("total".into(), json!(total));
    out.insert(
        "hits".into(),
        Value::Array(hits.into_iter().map(|(_, h)| h).collect()),
    );
    out.insert("took_ms".into(), json!(took));
    if let Some(next) = next {
        out.insert("cursor".into(), json!(next));
    }
    if let Some(c) = columns {
        out.insert("columns".into(), c);
        out.insert("rows".into(), json!(rows));
    }
    Value::Object(out)
}

/// Adds a pipeline row: a row with the same leading columns gets its last column summed.
fn add_row(rows: &mut Vec<Vec<Value>>, row: &[Value]) {
    let Some((last, head)) = row.split_last() else {
        return;
    };
    if let Some(existing) = rows
        .iter_mut()
        .find(|r| r.len() == row.len() && r[..head.len()] == *head)
        && let (Some(a), Some(b)) = (existing[head.len()].as_f64(), last.as_f64())
    {
        let sum = a + b;
        existing[head.len()] = if sum.fract() == 0.0 && sum.abs() < 9e15 {
            json!(sum as i64)
        } else {
            json!(sum)
        };
        return;
    }
    rows.push(row.to_vec());
}

/// Sums histograms bucket by bucket (the buckets of every shard share the same grid).
pub fn merge_histogram(replies: Vec<ShardReply>) -> Value {
    let mut out = Map::new();
    let answered = split(replies, &mut out);
    let mut interval = Value::Null;
    let mut buckets: BTreeMap<i64, Value> = BTreeMap::new();
    for (_, body) in answered {
        if interval.is_null() {
            interval = body["interval_ms"].clone();
        }
        for b in body["buckets"].as_array().into_iter().flatten() {
            let t = b["time_ms"].as_i64().unwrap_or(0);
            let slot = buckets.entry(t).or_insert_with(
                || json!({ "time": b["time"], "time_ms": t, "count": 0, "levels": {} }),
            );
            slot["count"] =
                json!(slot["count"].as_u64().unwrap_or(0) + b["count"].as_u64().unwrap_or(0));
            for (level, n) in b["levels"].as_object().into_iter().flatten() {
                let sum = slot["levels"][level].as_u64().unwrap_or(0) + n.as_u64().unwrap_or(0);
                slot["levels"][level] = json!(sum);
            }
        }
    }
    out.insert("interval_ms".into(), interval);
    out.insert(
        "buckets".into(),
        Value::Array(buckets.into_values().collect()),
    );
    Value::Object(out)
}

/// Sums facet counts value by value and keeps the 10 most frequent of each field.
pub fn merge_fields(replies: Vec<ShardReply>) -> Value {
    let mut out = Map::new();
    let answered = split(replies, &mut out);
    let mut fields: BTreeMap<String, Vec<(Value, u64)>> = BTreeMap::new();
    for (_, body) in answered {
        for (field, values) in body["fields"].as_object().into_iter().flatten() {
            let acc = fields.entry(field.clone()).or_default();
            for v in values.as_array().into_iter().flatten() {
                let n = v["count"].as_u64().unwrap_or(0);
                match acc.iter_mut().find(|(value, _)| *value == v["value"]) {
                    Some(slot) => slot.1 += n,
                    None => acc.push((v["value"].clone(), n)),
                }
            }
        }
    }
    let mut merged = Map::new();
    for (field, mut values) in fields {
        values.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
        });
        values.truncate(10);
        merged.insert(
            field,
            Value::Array(
                values
                    .into_iter()
                    .map(|(value, count)| json!({ "value": value, "count": count }))
                    .collect(),
            ),
        );
    }
    out.insert("fields".into(), Value::Object(merged));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(ts: &str, seq: u64) -> Value {
        json!({ "ts": ts, "seq": seq.to_string(), "msg": format!("{ts}/{seq}") })
    }

    #[test]
    fn hits_merge_by_time_shard_seq_and_page_with_a_cursor() {
        let replies = || {
            vec![
                (
                    0,
                    Ok(
                        json!({ "total": 2, "hits": [hit("2026-01-01T00:00:02Z", 7), hit("2026-01-01T00:00:01Z", 3)] }),
                    ),
                ),
                (
                    1,
                    Ok(
                        json!({ "total": 2, "hits": [hit("2026-01-01T00:00:02Z", 1), hit("2026-01-01T00:00:00Z", 9)] }),
                    ),
                ),
                (2, Err("down".to_string())),
            ]
        };
        let page = merge_search(replies(), false, 3, None);
        let order: Vec<(u64, String)> = page["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| {
                (
                    h["shard"].as_u64().expect("shard"),
                    h["seq"].as_str().expect("seq").to_string(),
                )
            })
            .collect();
        // Same ts on shards 0 and 1: the higher shard first in newest-first order.
        assert_eq!(order, [(1, "1".into()), (0, "7".into()), (0, "3".into())]);
        assert_eq!(page["total"], 4);
        assert_eq!(page["shards"], json!({ "total": 3, "answered": 2 }));
        assert_eq!(page["missing_shards"][0]["shard"], 2);
        let cursor = HitKey::parse(page["cursor"].as_str().expect("cursor")).expect("parses");
        let next = merge_search(replies(), false, 3, Some(cursor));
        assert_eq!(next["hits"].as_array().expect("hits").len(), 1);
        assert_eq!(next["hits"][0]["seq"], "9");
        assert!(next.get("cursor").is_none());
    }

    #[test]
    fn histograms_facets_and_rows_add_up() {
        let h = merge_histogram(vec![
            (
                0,
                Ok(
                    json!({ "interval_ms": 10, "buckets": [{ "time": "a", "time_ms": 0, "count": 2, "levels": { "info": 2 } }] }),
                ),
            ),
            (
                1,
                Ok(json!({ "interval_ms": 10, "buckets": [
                { "time": "a", "time_ms": 0, "count": 1, "levels": { "error": 1 } },
                { "time": "b", "time_ms": 10, "count": 4, "levels": { "info": 4 } }] })),
            ),
        ]);
        assert_eq!(h["buckets"][0]["count"], 3);
        assert_eq!(h["buckets"][0]["levels"], json!({ "info": 2, "error": 1 }));
        assert_eq!(h["buckets"][1]["count"], 4);
        let f = merge_fields(vec![
            (
                0,
                Ok(json!({ "fields": { "level": [{ "value": "info", "count": 2 }] } })),
            ),
            (
                1,
                Ok(
                    json!({ "fields": { "level": [{ "value": "info", "count": 3 }, { "value": "error", "count": 1 }] } }),
                ),
            ),
        ]);
        assert_eq!(
            f["fields"]["level"][0],
            json!({ "value": "info", "count": 5 })
        );
        let s = merge_search(
            vec![
                (
                    0,
                    Ok(
                        json!({ "total": 3, "hits": [], "columns": ["task", "count"], "rows": [["a", 2], ["b", 1]] }),
                    ),
                ),
                (
                    1,
                    Ok(
                        json!({ "total": 1, "hits": [], "columns": ["task", "count"], "rows": [["a", 1]] }),
                    ),
                ),
            ],
            false,
            10,
            None,
        );
        assert_eq!(s["rows"], json!([["a", 3], ["b", 1]]));
    }

    #[test]
    fn each_shard_is_asked_for_what_follows_the_cursor() {
        let c = HitKey {
            ts: 100,
            shard: 2,
            seq: 9,
        };
        // Newest first: shard 2 continues below seq 9 at ts 100; shard 1 may still give
        // ts 100; shard 3 only ts < 100.
        assert_eq!(c.after_for(2, false), (100, 9));
        assert_eq!(c.after_for(1, false), (101, 0));
        assert_eq!(c.after_for(3, false), (100, 0));
        assert_eq!(c.after_for(1, true), (100, u64::MAX));
        assert_eq!(c.after_for(3, true), (99, u64::MAX));
    }

    #[test]
    fn cursors_round_trip() {
        let k = HitKey {
            ts: -5,
            shard: 2,
            seq: 9,
        };
        assert_eq!(HitKey::parse(&k.to_cursor()), Some(k));
        assert_eq!(HitKey::parse("1_2"), None);
        assert_eq!(HitKey::parse("1_2_3_4"), None);
    }
}
