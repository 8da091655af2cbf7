//! Dead letters in cluster mode.
//!
//! Each shard copy keeps its own dead-letter store (`DATA_DIR/shards/<k>/dlq/`), fed by
//! a follower of that copy's chain, so an entry's number is a seq in the shard's chain
//! and means nothing without the shard. Outside a collector, entry and job ids therefore
//! carry their shard: `s<k>-<n>` ([`ShardId`]).
//!
//! - A listing is asked of every shard owner (with the shard header) and merged
//!   ([`merge_list`]): entries oldest first by `(time, shard, seq)`, totals summed, shards
//!   that did not answer in `missing_shards`.
//! - Anything about one entry or job goes to the owner of its shard ([`Cluster::ask_owner`])
//!   and the owner's answer is passed back as it is.
//! - A replay by selection is asked of every owner (or, with `ids`, of the owners of
//!   those ids) and the selections merged ([`merge_replay`]), one job per shard.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::fanout::ShardReply;
use super::{Cluster, SHARD_HEADER};

/// An entry or job id with its shard: `s<k>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId {
    /// The shard.
    pub shard: u32,
    /// The id in the shard's dead-letter store.
    pub id: u64,
}

impl ShardId {
    /// Reads `s<k>-<n>`.
    pub fn parse(text: &str) -> Option<ShardId> {
        let (shard, id) = text.trim().strip_prefix('s')?.split_once('-')?;
        if shard.is_empty()
            || id.is_empty()
            || !(shard.bytes().chain(id.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(ShardId {
            shard: shard.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}-{}", self.shard, self.id)
    }
}

/// Rewrites a local id (a JSON number) as `s<k>-<n>`; anything else is left alone.
fn tag_id(v: &mut Value, shard: u32) {
    if let Some(id) = v.as_u64() {
        *v = json!(ShardId { shard, id }.to_string());
    }
}

/// An entry as a shard owner answers it: `id` as `s<k>-<n>`, plus `shard` and `seq`.
pub fn tag_entry(entry: &mut Value, shard: u32) {
    if let Some(o) = entry.as_object_mut() {
        if let Some(seq) = o.get("id").and_then(Value::as_u64) {
            o.insert("seq".into(), json!(seq));
        }
        if let Some(id) = o.get_mut("id") {
            tag_id(id, shard);
        }
        o.insert("shard".into(), json!(shard));
        if let Some(job) = o
            .get_mut("last_attempt")
            .and_then(Value::as_object_mut)
            .and_then(|a| a.get_mut("job"))
        {
            tag_id(job, shard);
        }
    }
}

/// A job as a shard owner answers it: its id and its entries' ids with the shard.
pub fn tag_job(job: &mut Value, shard: u32) {
    if let Some(o) = job.as_object_mut() {
        for key in ["id", "in_flight"] {
            if let Some(v) = o.get_mut(key) {
                tag_id(v, shard);
            }
        }
        if let Some(entries) = o.get_mut("entries").and_then(Value::as_array_mut) {
            entries.iter_mut().for_each(|e| tag_id(e, shard));
        }
        o.insert("shard".into(), json!(shard));
    }
}

/// Tags whatever a dead-letter endpoint answers: an entry, `{entry, job}`, a selection
/// (`send[].entry`, `refused[].entry`, `job`) or a job.
pub fn tag_answer(answer: &mut Value, shard: u32) {
    let Some(o) = answer.as_object_mut() else {
        return;
    };
    if o.contains_key("task_id") {
        tag_entry(answer, shard);
        return;
    }
    if o.contains_key("caller") && o.contains_key("entries") {
        tag_job(answer, shard);
        return;
    }
    if let Some(e) = o.get_mut("entry") {
        tag_entry(e, shard);
    }
    if let Some(j) = o.get_mut("job") {
        tag_job(j, shard);
    }
    for list in ["send", "refused"] {
        for item in o
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(e) = item.get_mut("entry") {
                tag_entry(e, shard);
            }
        }
    }
}

/// Where a merged listing puts an entry: by failure time (last failure, else `ts`),
/// then shard, then seq. Entries without a readable time come first.
fn list_key(entry: &Value) -> (Option<i128>, u32, u64) {
    let time = ["last_failed", "ts"]
        .iter()
        .filter_map(|k| entry.get(*k).and_then(Value::as_str))
        .find_map(|t| spoor_sdk::timestamp::parse_timestamp(t).ok())
        .map(time::OffsetDateTime::unix_timestamp_nanos);
    (
        time,
        entry
            .get("shard")
            .and_then(Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(u32::MAX),
        entry.get("seq").and_then(Value::as_u64).unwrap_or(0),
    )
}

/// Merges the listings of the shard owners: `total` summed, `entries` the first `limit`
/// oldest first, `shards` and `missing_shards` like a search.
pub fn merge_list(replies: Vec<ShardReply>, limit: usize) -> Value {
    let mut out = Map::new();
    let answered = super::fanout::split(replies, &mut out);
    let mut total = 0u64;
    let mut entries = Vec::new();
    for (shard, body) in answered {
        total += body["total"].as_u64().unwrap_or(0);
        for e in body["entries"].as_array().into_iter().flatten() {
            let mut e = e.clone();
            if e.get("shard").is_none() {
                tag_entry(&mut e, shard);
            }
            entries.push(e);
        }
    }
    entries.sort_by_key(list_key);
    entries.truncate(limit);
    out.insert("total".into(), json!(total));
    out.insert("entries".into(), Value::Array(entries));
    Value::Object(out)
}

/// Merges the answers of a replay by selection: `send` and `refused` concatenated,
/// `jobs` one per shard that started one, `shards` and `missing_shards` like a search.
pub fn merge_replay(replies: Vec<ShardReply>, dry_run: bool) -> Value {
    let mut out = Map::new();
    let answered = super::fanout::split(replies, &mut out);
    let (mut send, mut refused, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for (_, body) in answered {
        send.extend(body["send"].as_array().into_iter().flatten().cloned());
        refused.extend(body["refused"].as_array().into_iter().flatten().cloned());
        if let Some(job) = body.get("job").filter(|j| !j.is_null()) {
            jobs.push(job.clone());
        }
    }
    out.insert("dry_run".into(), json!(dry_run));
    out.insert("send".into(), Value::Array(send));
    out.insert("refused".into(), Value::Array(refused));
    out.insert("jobs".into(), Value::Array(jobs));
    Value::Object(out)
}

/// Groups ids by shard, keeping each shard's order.
pub fn by_shard(ids: &[ShardId]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for id in ids {
        out.entry(id.shard).or_default().push(id.id);
    }
    out
}

impl Cluster {
    /// Sends one request to the owner of `shard` (with the shard header and the caller's
    /// `Authorization`, or the peer token) and returns its status and JSON body; `Err`
    /// says why no answer came (no owner, unreachable, not JSON).
    pub async fn ask_owner(
        &self,
        shard: u32,
        method: reqwest::Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        authorization: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let Some(url) = self.owner_urls().get(shard as usize).cloned().flatten() else {
            return Err(format!("shard {shard}: no owner holds the shard's lease"));
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", url.trim_end_matches('/')))
            .query(query)
            .header(SHARD_HEADER, shard.to_string());
        if let Some(a) = authorization
            .map(str::to_string)
            .or_else(|| self.peer_authorization.clone())
        {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("{url}: unreadable answer: {e}"))?;
        Ok((status, body))
    }
}

/// A shard owner's answer as a fan-out reply: its body on success, else the reason.
pub fn as_reply(shard: u32, answer: Result<(u16, Value), String>) -> ShardReply {
    match answer {
        Ok((status, body)) if (200..300).contains(&status) => (shard, Ok(body)),
        Ok((status, body)) => (
            shard,
            Err(format!(
                "{status}: {}",
                body.get("error").and_then(Value::as_str).unwrap_or("")
            )),
        ),
        Err(e) => (shard, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_shard() {
        let id = ShardId { shard: 3, id: 42 };
        assert_eq!(id.to_string(), "s3-42");
        assert_eq!(ShardId::parse("s3-42"), Some(id));
        for bad in [
            "42", "s3", "s-42", "s3-", "3-42", "s3-42-1", "s+3-42", "s3--42", "sx-1",
        ] {
            assert_eq!(ShardId::parse(bad), None, "{bad}");
        }
        let grouped = by_shard(&[
            ShardId { shard: 1, id: 9 },
            ShardId { shard: 0, id: 4 },
            ShardId { shard: 1, id: 2 },
        ]);
        assert_eq!(grouped.get(&1), Some(&vec![9, 2]));
        assert_eq!(grouped.get(&0), Some(&vec![4]));
    }

    #[test]
    fn answers_are_tagged_with_the_shard() {
        let mut e = json!({ "id": 7, "task_id": "r", "state": "failed",
            "last_attempt": { "job": 2, "at": "x" } });
        tag_answer(&mut e, 1);
        assert_eq!(e["id"], "s1-7");
        assert_eq!((e["shard"].clone(), e["seq"].clone()), (json!(1), json!(7)));
        assert_eq!(e["last_attempt"]["job"], "s1-2");
        let mut j = json!({ "id": 3, "caller": "a", "entries": [7, 8], "in_flight": null });
        tag_answer(&mut j, 2);
        assert_eq!(j["id"], "s2-3");
        assert_eq!(j["entries"], json!(["s2-7", "s2-8"]));
        assert!(j["in_flight"].is_null());
        let mut sel = json!({ "send": [{ "entry": { "id": 1, "task_id": "a" }, "url": "u" }],
            "refused": [{ "entry": { "id": 2, "task_id": "b" }, "reason": "r" }],
            "job": { "id": 5, "caller": "a", "entries": [1] } });
        tag_answer(&mut sel, 0);
        assert_eq!(sel["send"][0]["entry"]["id"], "s0-1");
        assert_eq!(sel["refused"][0]["entry"]["id"], "s0-2");
        assert_eq!(sel["job"]["id"], "s0-5");
    }

    #[test]
    fn listings_merge_oldest_first_and_report_missing_shards() {
        let entry = |shard: u32, seq: u64, t: &str| {
            let mut e = json!({ "id": seq, "task_id": "x", "last_failed": t });
            tag_entry(&mut e, shard);
            e
        };
        let merged = merge_list(
            vec![
                (
                    0,
                    Ok(json!({ "total": 3, "entries": [
                        entry(0, 4, "2026-11-30T01:00:00Z"),
                        entry(0, 9, "2026-11-30T03:00:00Z")] })),
                ),
                (1, Err("down".into())),
                (
                    2,
                    Ok(json!({ "total": 1, "entries": [entry(2, 1, "2026-11-30T02:00:00Z")] })),
                ),
            ],
            2,
        );
        assert_eq!(merged["total"], 4);
        let ids: Vec<&str> = merged["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert_eq!(ids, ["s0-4", "s2-1"]);
        assert_eq!(merged["shards"], json!({ "total": 3, "answered": 2 }));
        assert_eq!(merged["missing_shards"][0]["shard"], 1);

        let replay = merge_replay(
            vec![
                as_reply(
                    0,
                    Ok((
                        200,
                        json!({ "send": [{"entry": {"id": "s0-4"}}], "refused": [], "job": {"id": "s0-1"} }),
                    )),
                ),
                as_reply(1, Ok((409, json!({ "error": "no" })))),
                as_reply(
                    2,
                    Ok((
                        200,
                        json!({ "send": [], "refused": [{"entry": {"id": "s2-1"}}] }),
                    )),
                ),
            ],
            false,
        );
        assert_eq!(replay["send"].as_array().map(Vec::len), Some(1));
        assert_eq!(replay["refused"].as_array().map(Vec::len), Some(1));
        assert_eq!(replay["jobs"], json!([{ "id": "s0-1" }]));
        assert_eq!(replay["missing_shards"][0]["error"], "409: no");
    }
}
