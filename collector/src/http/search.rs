//! Read endpoints: search, histogram, facets and live tail (server-sent events).
//! Each search is also written to the audit log as a `kind=audit` record.
//!
//! In cluster mode a request without the shard header is fanned out to the shard owners
//! and merged ([`crate::cluster::fanout`]); one with it is answered from that shard's
//! copy, by its owner only.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use spoor_sdk::event::{Event, keys};

use super::{ApiError, AppState, Caller};
use crate::config::Scope;
use crate::search::{self as run, SearchRequest};

/// Query-string parameters shared by the read endpoints.
#[derive(Debug, Deserialize)]
pub(super) struct Params {
    #[serde(default)]
    q: String,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
    buckets: Option<u32>,
    /// Cluster mode: continue after this hit (the `cursor` of the previous page).
    cursor: Option<String>,
    /// Cluster mode, to a shard owner: only hits after `<ts nanos>_<seq>`.
    after: Option<String>,
    /// Cluster mode, to a shard owner: `seq` makes the page's last timestamp exact.
    ties: Option<String>,
}

/// Where a read runs.
enum Target {
    /// On this index (a single collector, or the shard named by the shard header).
    Local(crate::index::LogIndex),
    /// On every shard owner.
    FanOut(std::sync::Arc<crate::cluster::Cluster>),
}

fn target(state: &AppState, headers: &HeaderMap) -> Result<Target, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Target::Local(state.index.clone()));
    };
    let Some(value) = headers.get(crate::cluster::SHARD_HEADER) else {
        return Ok(Target::FanOut(cluster.clone()));
    };
    let shard: u32 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("X-Spoor-Shard must be a shard number"))?;
    cluster
        .owned(shard)
        .map(|r| Target::Local(r.index.clone()))
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("this collector does not own shard {shard} (any more)"),
            )
        })
}

impl Params {
    /// The query string a shard owner gets.
    fn forward(&self) -> Vec<(String, String)> {
        let mut out = vec![("q".to_string(), self.q.clone())];
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        push("from", self.from.clone());
        push("to", self.to.clone());
        push("limit", self.limit.map(|l| l.to_string()));
        push("order", self.order.clone());
        push("buckets", self.buckets.map(|b| b.to_string()));
        out
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn fan_out_search(
    cluster: &crate::cluster::Cluster,
    headers: &HeaderMap,
    params: &Params,
    req: &SearchRequest,
) -> Result<Value, ApiError> {
    use crate::cluster::fanout::{HitKey, merge_search};
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            HitKey::parse(c)
                .ok_or_else(|| ApiError::bad_request("cursor is not one this API gave"))?,
        ),
    };
    let mut query = params.forward();
    query.push(("ties".into(), "seq".into()));
    let replies = cluster
        .ask_owners_each(
            "/api/v1/search",
            |shard| {
                let mut q = query.clone();
                if let Some(c) = cursor {
                    let (ts, seq) = c.after_for(shard, req.ascending);
                    q.push(("after".into(), format!("{ts}_{seq}")));
                }
                q
            },
            authorization(headers),
        )
        .await;
    let limit = req.limit.unwrap_or(100).min(run::MAX_LIMIT);
    Ok(merge_search(replies, req.ascending, limit, cursor))
}

impl Params {
    fn request(&self) -> Result<SearchRequest, ApiError> {
        let ascending = match self.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order must be asc or desc, not `{other}`"
                )));
            }
        };
        Ok(SearchRequest {
            q: self.q.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            limit: self.limit,
            ascending,
            min_seq: None,
            by_seq: false,
            after: match self.after.as_deref() {
                None => None,
                Some(a) => Some(
                    a.split_once('_')
                        .and_then(|(t, s)| Some((t.parse().ok()?, s.parse().ok()?)))
                        .ok_or_else(|| ApiError::bad_request("after must be <ts nanos>_<seq>"))?,
                ),
            },
            seq_ties: self.ties.as_deref() == Some("seq"),
        })
    }
}

/// Writes the search to the audit log without making the caller wait for the fsync.
fn audit_search(state: &AppState, caller: &Caller, action: &str, params: &Params) {
    let mut event = Event::new();
    event.set_timestamp(time::OffsetDateTime::now_utc());
    event.push(keys::LEVEL, "info");
    event.push(keys::MSG, format!("{action} by {}", caller.name));
    event.push(keys::KIND, "audit");
    event.push("action", action);
    event.push("caller", caller.name.clone());
    event.push("query", params.q.clone());
    if let Some(f) = &params.from {
        event.push("from", f.clone());
    }
    if let Some(t) = &params.to {
        event.push("to", t.clone());
    }
    let writer = state.writer.clone();
    tokio::spawn(async move {
        if let Err(e) = writer
            .append("", "collector", vec![event.to_line().into_bytes()])
            .await
        {
            tracing::warn!(error = %e, "Could not write the audit record of a search.");
        }
    });
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("search", &e))?
}

pub(super) async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Read)?;
    let req = params.request()?;
    let index = match target(&state, &headers)? {
        Target::Local(index) => index,
        Target::FanOut(cluster) => {
            // Check the query here, so a bad one is one 400 and not N missing shards.
            spoor_query::parse_query(&req.q).map_err(run::SearchError::from)?;
            let merged = fan_out_search(&cluster, &headers, &params, &req).await?;
            state.metrics.searches.fetch_add(1, Ordering::Relaxed);
            audit_search(&state, &caller, "search", &params);
            return Ok(Json(merged));
        }
    };
    let local_to_shard = state.cluster.is_some();
    let response = blocking(move || Ok(run::search(&index, &req)?)).await?;
    state.metrics.searches.fetch_add(1, Ordering::Relaxed);
    if !local_to_shard {
        audit_search(&state, &caller, "search", &params);
    }
    Ok(Json(json!(response)))
}

pub(super) async fn histogram(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    let req = params.request()?;
    let index = match target(&state, &headers)? {
        Target::Local(index) => index,
        Target::FanOut(cluster) => {
            spoor_query::parse_query(&req.q).map_err(run::SearchError::from)?;
            let replies = cluster
                .ask_owners(
                    "/api/v1/histogram",
                    &params.forward(),
                    authorization(&headers),
                )
                .await;
            return Ok(Json(crate::cluster::fanout::merge_histogram(replies)));
        }
    };
    let buckets = params.buckets;
    let h = blocking(move || Ok(run::histogram(&index, &req, buckets)?)).await?;
    Ok(Json(json!(h)))
}

pub(super) async fn fields(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    let req = params.request()?;
    let index = match target(&state, &headers)? {
        Target::Local(index) => index,
        Target::FanOut(cluster) => {
            spoor_query::parse_query(&req.q).map_err(run::SearchError::from)?;
            let replies = cluster
                .ask_owners("/api/v1/fields", &params.forward(), authorization(&headers))
                .await;
            return Ok(Json(crate::cluster::fanout::merge_fields(replies)));
        }
    };
    let f = blocking(move || Ok(run::fields(&index, &req)?)).await?;
    Ok(Json(json!({ "fields": f })))
}

/// Parameters of `GET /api/v1/context`.
#[derive(Debug, Deserialize)]
pub(super) struct ContextParams {
    seq: u64,
    before: Option<usize>,
    after: Option<usize>,
    /// Cluster mode: the hit's shard (its `seq` is a position in that shard's chain).
    shard: Option<u32>,
}

/// `GET /api/v1/context?seq=&before=&after=`; in cluster mode also `shard=`, and the
/// request goes to that shard's owner, whose answer is passed back (hits carry `shard`).
pub(super) async fn context(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ContextParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    state.auth.check(&headers, Scope::Read)?;
    let (before, after) = (
        params.before.unwrap_or(20).min(1000),
        params.after.unwrap_or(20).min(1000),
    );
    let (index, shard) = match target(&state, &headers)? {
        Target::Local(index) => (
            index,
            state
                .cluster
                .as_ref()
                .and(headers.get(crate::cluster::SHARD_HEADER))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok()),
        ),
        Target::FanOut(cluster) => {
            let Some(shard) = params.shard else {
                return Err(ApiError::bad_request(
                    "in cluster mode context needs the hit's shard (shard=<k>)",
                ));
            };
            if shard >= cluster.config().shards {
                return Err(ApiError::bad_request(format!("there is no shard {shard}")));
            }
            let query = vec![
                ("seq".to_string(), params.seq.to_string()),
                ("before".to_string(), before.to_string()),
                ("after".to_string(), after.to_string()),
            ];
            let answer = cluster
                .ask_owner(
                    shard,
                    reqwest::Method::GET,
                    "/api/v1/context",
                    &query,
                    None,
                    authorization(&headers),
                )
                .await;
            return match answer {
                Ok((status, body)) => Ok((
                    axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                    Json(body),
                )
                    .into_response()),
                Err(e) => Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("shard {shard} did not answer: {e}"),
                )
                .with("missing_shards", json!([{ "shard": shard, "error": e }]))),
            };
        }
    };
    let found = blocking(move || Ok(run::context(&index, params.seq, before, after)?)).await?;
    let mut found = json!(found);
    if let Some(k) = shard {
        for hit in found["hits"].as_array_mut().into_iter().flatten() {
            if let Some(o) = hit.as_object_mut() {
                o.insert("shard".into(), json!(k));
            }
        }
    }
    Ok(Json(found).into_response())
}

/// Most lines one tail message carries; more wait for the next round.
const TAIL_BATCH: usize = 1000;

/// `GET /api/v1/tail?q=`: server-sent events, one `data:` per new matching line (a JSON
/// object like a search hit), from the moment of the request on.
pub(super) async fn tail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    let mut req = params.request()?;
    // Check the query once up front, so a bad one is a 400 and not a silent stream.
    spoor_query::parse_query(&req.q).map_err(run::SearchError::from)?;
    let (index, indexed) = match target(&state, &headers)? {
        Target::Local(index) => {
            let indexed = match (&state.cluster, headers.get(crate::cluster::SHARD_HEADER)) {
                (Some(cluster), Some(_)) => {
                    let shard = headers
                        .get(crate::cluster::SHARD_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                        .and_then(|k| cluster.owned(k))
                        .ok_or_else(|| ApiError::bad_request("no such shard here"))?;
                    shard.indexed.clone()
                }
                _ => state.indexed.clone(),
            };
            (index, indexed)
        }
        Target::FanOut(cluster) => {
            let mut query = params.forward();
            query.retain(|(k, _)| k == "q");
            let rx = crate::cluster::fanout::tail(cluster, query, authorization(&headers));
            let events = stream::unfold(rx, |mut rx| async move {
                let hit = rx.recv().await?;
                Some((Ok(SseEvent::default().data(hit.to_string())), rx))
            });
            return Ok(Sse::new(futures_util::future::Either::Right(events))
                .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))));
        }
    };
    req.ascending = true;
    req.by_seq = true;
    req.limit = Some(TAIL_BATCH);
    req.from = None;
    req.to = None;
    let start = *indexed.borrow();
    let initial = ((index, indexed), req, start, Vec::<SseEvent>::new());
    let events = stream::unfold(
        initial,
        |(state, mut req, mut next, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop() {
                    return Some((Ok(e), (state, req, next, queue)));
                }
                let mut indexed = state.1.clone();
                // Mark the current value seen, so `changed` waits for a new one (no spin).
                let current = *indexed.borrow_and_update();
                if current <= next && indexed.changed().await.is_err() {
                    return None;
                }
                // Read the watermark before searching: a line indexed during the search
                // is then found by the next round instead of being skipped.
                let upto = *indexed.borrow();
                req.min_seq = Some(next);
                let index = state.0.clone();
                let r = req.clone();
                let found = tokio::task::spawn_blocking(move || run::search(&index, &r)).await;
                let Ok(Ok(found)) = found else {
                    continue;
                };
                let mut max_seq = None;
                for hit in &found.hits {
                    let seq = hit
                        .get(keys::SEQ)
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<u64>().ok());
                    max_seq = max_seq.max(seq);
                }
                next = match max_seq {
                    Some(s) if found.hits.len() >= TAIL_BATCH => s + 1,
                    _ => upto.max(max_seq.map_or(0, |s| s + 1)),
                };
                // Oldest first: the queue pops from the back.
                for hit in found.hits.iter().rev() {
                    queue.push(SseEvent::default().data(json!(hit).to_string()));
                }
            }
        },
    );
    Ok(Sse::new(futures_util::future::Either::Left(events))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
