//! The dead-letter API (admin scope): list and show entries, replay one or many (with dry
//! run, `max`, `rate`), follow a replay job, discard.
//!
//! - `GET  /api/v1/dlq?task=&error=&state=&from=&to=&limit=` → `{"entries": [...], "total"}`
//!   (`total` counts every match; `entries` are the first `limit`, oldest first)
//! - `GET  /api/v1/dlq/{id}` → the entry
//! - `POST /api/v1/dlq/{id}/replay` → sends it now and answers with the entry and job;
//!   with `?dry_run=true` sends nothing and answers like a dry run by selection
//! - `POST /api/v1/dlq/replay` with a JSON body `{task, error, state, from, to, max, ids,
//!   rate, dry_run, wait}` (`ids` instead of the filters) → `dry_run`: what would be sent (entry,
//!   url, idempotency key and request body) and what is refused; otherwise a job
//!   `{"job": {...}}` (202, or 200 with the finished job when `wait` is true)
//! - `GET  /api/v1/dlq/jobs/{id}` → a job's progress
//! - `POST /api/v1/dlq/{id}/discard` → the entry, now `discarded`
//!
//! In cluster mode ([`crate::cluster::dlq`]) every shard copy has its own store and ids
//! read `s<k>-<n>`: a request without the shard header is fanned out (listing, replay by
//! selection) or routed to the owner of the id's shard (everything else); one with it is
//! answered from that shard's store, by its owner only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::cluster::Cluster;
use crate::cluster::dlq::{ShardId, tag_answer};
use crate::config::Scope;
use crate::dlq::{Dlq, DlqError, Filter, Selection, StoreError};
use crate::search::parse_bound;

/// Most entries one listing returns by default.
const DEFAULT_LIMIT: usize = 100;

impl From<DlqError> for ApiError {
    fn from(err: DlqError) -> Self {
        match err {
            DlqError::Store(StoreError::NotFound(id)) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no dead-letter entry or job {id}"),
            ),
            DlqError::Store(e @ StoreError::State { .. }) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            other => ApiError::internal("the dead-letter store", &other),
        }
    }
}

/// Filters shared by listing and bulk replay.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterParams {
    task: Option<String>,
    error: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

impl FilterParams {
    fn filter(&self) -> Result<Filter, ApiError> {
        let now = time::OffsetDateTime::now_utc();
        let bound = |b: &Option<String>| -> Result<_, ApiError> {
            b.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| parse_bound(s, now))
                .transpose()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        };
        Ok(Filter {
            task: self.task.clone().filter(|s| !s.is_empty()),
            error: self.error.clone().filter(|s| !s.is_empty()),
            state: self
                .state
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .transpose()
                .map_err(ApiError::bad_request)?,
            from: bound(&self.from)?,
            to: bound(&self.to)?,
        })
    }
}

/// Where a dead-letter request is answered.
enum Where {
    /// From a store on this collector: the only one (single mode, no shard), or that of
    /// the shard named by the shard header (its entries' ids are then tagged).
    Here(Arc<Dlq>, Option<u32>),
    /// Cluster mode, asked by a client: by the shard owners.
    Owners(Arc<Cluster>),
}

fn place(state: &AppState, headers: &HeaderMap) -> Result<Where, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Where::Here(state.dlq.clone(), None));
    };
    let Some(value) = headers.get(crate::cluster::SHARD_HEADER) else {
        return Ok(Where::Owners(cluster.clone()));
    };
    let shard: u32 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("X-Spoor-Shard must be a shard number"))?;
    let Some(replica) = cluster.owned(shard) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("this collector does not own shard {shard} (any more)"),
        ));
    };
    match &replica.dlq {
        Some(dlq) => Ok(Where::Here(dlq.clone(), Some(shard))),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the dead-letter store of shard {shard} is not open; see the owner's log"),
        )),
    }
}

/// The id in a store on this collector: a number, or in a shard's store also `s<k>-<n>`
/// with that shard.
fn local_id(text: &str, shard: Option<u32>) -> Result<u64, ApiError> {
    if let Ok(n) = text.trim().parse() {
        return Ok(n);
    }
    match (shard, ShardId::parse(text)) {
        (Some(k), Some(id)) if id.shard == k => Ok(id.id),
        (Some(k), Some(id)) => Err(ApiError::bad_request(format!(
            "{id} belongs to shard {}, not {k}",
            id.shard
        ))),
        _ => Err(ApiError::bad_request(format!(
            "`{text}` is not a dead-letter id"
        ))),
    }
}

/// An id given to a collector in cluster mode: `s<k>-<n>`.
fn cluster_id(text: &str) -> Result<ShardId, ApiError> {
    ShardId::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{text}` is not a dead-letter id of cluster mode (s<shard>-<n>)"
        ))
    })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// A value as answered from a store on this collector: ids tagged with the shard.
fn out(mut v: Value, shard: Option<u32>) -> Value {
    if let Some(k) = shard {
        tag_answer(&mut v, k);
    }
    v
}

/// Sends the request to the owner of `id`'s shard and answers with what it answered.
async fn route(
    cluster: &Cluster,
    headers: &HeaderMap,
    method: reqwest::Method,
    id: ShardId,
    tail: &str,
    body: Option<Value>,
) -> Result<Response, ApiError> {
    let path = format!("/api/v1/dlq/{id}{tail}");
    ask_shard_owner(cluster, headers, method, id.shard, &path, body).await
}

/// Sends `path` to the owner of `shard` and answers with what it answered (503 naming the
/// shard when it does not answer).
async fn ask_shard_owner(
    cluster: &Cluster,
    headers: &HeaderMap,
    method: reqwest::Method,
    shard: u32,
    path: &str,
    body: Option<Value>,
) -> Result<Response, ApiError> {
    let answer = cluster
        .ask_owner(
            shard,
            method,
            path,
            &[],
            body.as_ref(),
            authorization(headers),
        )
        .await;
    match answer {
        Ok((status, body)) => Ok((
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(body),
        )
            .into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("shard {shard} did not answer: {e}"),
        )
        .with("missing_shards", json!([{ "shard": shard, "error": e }]))),
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<FilterParams>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let filter = params.filter()?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => {
            let query: Vec<(String, String)> = [
                ("task", &params.task),
                ("error", &params.error),
                ("state", &params.state),
                ("from", &params.from),
                ("to", &params.to),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .chain([("limit".to_string(), limit.to_string())])
            .collect();
            let replies = cluster
                .ask_owners("/api/v1/dlq", &query, authorization(&headers))
                .await;
            return Ok(Json(crate::cluster::dlq::merge_list(replies, limit)));
        }
    };
    let mut entries = tokio::task::spawn_blocking(move || dlq.store().list(&filter, usize::MAX))
        .await
        .map_err(|e| ApiError::internal("listing dead letters", &e))?
        .map_err(DlqError::from)?;
    // `total` counts every match; `entries` holds the first `limit`, oldest first.
    let total = entries.len();
    entries.truncate(limit);
    let entries: Vec<Value> = entries.into_iter().map(|e| out(json!(e), shard)).collect();
    Ok(Json(json!({ "total": total, "entries": entries })))
}

pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => {
            let id = cluster_id(&id)?;
            return route(&cluster, &headers, reqwest::Method::GET, id, "", None).await;
        }
    };
    let id = local_id(&id, shard)?;
    let entry = dlq.store().get(id).map_err(DlqError::from)?;
    match entry {
        Some(e) => Ok(Json(out(json!(e), shard)).into_response()),
        None => Err(DlqError::Store(StoreError::NotFound(id)).into()),
    }
}

pub(super) async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => {
            let id = cluster_id(&id)?;
            let path = format!("/api/v1/dlq/jobs/{id}");
            return ask_shard_owner(
                &cluster,
                &headers,
                reqwest::Method::GET,
                id.shard,
                &path,
                None,
            )
            .await;
        }
    };
    let id = local_id(&id, shard)?;
    match dlq.store().job(id).map_err(DlqError::from)? {
        Some(j) => Ok(Json(out(json!(j), shard)).into_response()),
        None => Err(DlqError::Store(StoreError::NotFound(id)).into()),
    }
}

/// Query parameters of `POST /api/v1/dlq/{id}/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayOneParams {
    /// Answer with what would be sent (like a replay by selection); send nothing.
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<ReplayOneParams>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => {
            let id = cluster_id(&id)?;
            let tail = if params.dry_run {
                "/replay?dry_run=true"
            } else {
                "/replay"
            };
            return route(
                &cluster,
                &headers,
                reqwest::Method::POST,
                id,
                tail,
                Some(json!({})),
            )
            .await;
        }
    };
    let id = local_id(&id, shard)?;
    if params.dry_run {
        let d = dlq.clone();
        let sel = tokio::task::spawn_blocking(move || d.select_ids(&[id]))
            .await
            .map_err(|e| ApiError::internal("selecting dead letters", &e))??;
        let mut answer = selection_json(&sel);
        answer["dry_run"] = json!(true);
        return Ok(Json(out(answer, shard)).into_response());
    }
    let Some(entry) = dlq.store().get(id).map_err(DlqError::from)? else {
        return Err(DlqError::Store(StoreError::NotFound(id)).into());
    };
    if let Err(why) = dlq.check(&entry) {
        let name = shard.map_or_else(|| id.to_string(), |k| ShardId { shard: k, id }.to_string());
        return Err(
            ApiError::new(StatusCode::CONFLICT, format!("entry {name}: {why}"))
                .with("entry", out(json!(entry), shard)),
        );
    }
    let job = dlq.replay(&caller.name, vec![id], None).await?;
    let job = dlq.wait(job.id).await?;
    let entry = dlq.store().get(id).map_err(DlqError::from)?;
    Ok(Json(out(json!({ "job": job, "entry": entry }), shard)).into_response())
}

/// An id in a replay body: a number (single mode, or a shard owner's own), or `s<k>-<n>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(super) enum IdArg {
    /// A store's own id.
    Number(u64),
    /// `s<k>-<n>`, or a number written as text.
    Text(String),
}

impl IdArg {
    fn text(&self) -> String {
        match self {
            IdArg::Number(n) => n.to_string(),
            IdArg::Text(t) => t.clone(),
        }
    }
}

/// The body of `POST /api/v1/dlq/replay`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ReplayBody {
    task: Option<String>,
    error: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Send at most this many.
    max: Option<usize>,
    /// These entries instead of the filters.
    ids: Vec<IdArg>,
    /// Requests per second.
    rate: Option<f64>,
    /// List what would be sent; send nothing.
    dry_run: bool,
    /// Answer only when the job is done.
    wait: bool,
}

fn selection_json(sel: &Selection) -> Value {
    json!({
        "send": sel.send.iter().map(|(e, url)| json!({
            "entry": e,
            "url": url,
            "idempotency_key": e.idempotency_key(),
            "body": crate::dlq::replay::request_body(e),
        })).collect::<Vec<_>>(),
        "refused": sel.refused.iter().map(|(e, why)| json!({"entry": e, "reason": why})).collect::<Vec<_>>(),
    })
}

/// Replay by selection in cluster mode: each shard owner selects (and replays) from its
/// store, with `ids` only the owners of those ids; the answers are merged.
async fn replay_on_owners(
    cluster: &Cluster,
    headers: &HeaderMap,
    body: &ReplayBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let shards: Vec<(u32, ReplayBody)> = if body.ids.is_empty() {
        (0..cluster.config().shards)
            .map(|k| (k, body.clone()))
            .collect()
    } else {
        let ids = body
            .ids
            .iter()
            .map(|i| cluster_id(&i.text()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(bad) = ids.iter().find(|i| i.shard >= cluster.config().shards) {
            return Err(ApiError::bad_request(format!(
                "{bad}: there is no shard {}",
                bad.shard
            )));
        }
        crate::cluster::dlq::by_shard(&ids)
            .into_iter()
            .map(|(k, ids)| {
                let mut b = body.clone();
                b.ids = ids
                    .into_iter()
                    .map(|id| IdArg::Text(ShardId { shard: k, id }.to_string()))
                    .collect();
                (k, b)
            })
            .collect()
    };
    let asks = shards.into_iter().map(|(k, b)| async move {
        let b = json!(b);
        let answer = cluster
            .ask_owner(
                k,
                reqwest::Method::POST,
                "/api/v1/dlq/replay",
                &[],
                Some(&b),
                authorization(headers),
            )
            .await;
        crate::cluster::dlq::as_reply(k, answer)
    });
    let replies = futures_util::future::join_all(asks).await;
    let merged = crate::cluster::dlq::merge_replay(replies, body.dry_run);
    let started = merged["jobs"].as_array().is_some_and(|j| !j.is_empty());
    let status = if started && !body.wait {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(merged)))
}

pub(super) async fn replay_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ReplayBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    if body.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(ApiError::bad_request("rate must be a number above 0"));
    }
    let filter = FilterParams {
        task: body.task.clone(),
        error: body.error.clone(),
        state: body.state.clone(),
        from: body.from.clone(),
        to: body.to.clone(),
        limit: None,
    }
    .filter()?;
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => return replay_on_owners(&cluster, &headers, &body).await,
    };
    let max = body.max.unwrap_or(usize::MAX);
    let ids = body
        .ids
        .iter()
        .map(|i| local_id(&i.text(), shard))
        .collect::<Result<Vec<_>, _>>()?;
    let d = dlq.clone();
    let sel = tokio::task::spawn_blocking(move || {
        if ids.is_empty() {
            d.select(&filter, max)
        } else {
            d.select_ids(&ids)
        }
    })
    .await
    .map_err(|e| ApiError::internal("selecting dead letters", &e))??;
    let mut answer = selection_json(&sel);
    answer["dry_run"] = json!(body.dry_run);
    if body.dry_run || sel.send.is_empty() {
        return Ok((StatusCode::OK, Json(out(answer, shard))));
    }
    let ids = sel.send.iter().map(|(e, _)| e.id).collect();
    let job = dlq.replay(&caller.name, ids, body.rate).await?;
    if body.wait {
        answer["job"] = json!(dlq.wait(job.id).await?);
        return Ok((StatusCode::OK, Json(out(answer, shard))));
    }
    answer["job"] = json!(job);
    Ok((StatusCode::ACCEPTED, Json(out(answer, shard))))
}

pub(super) async fn discard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let (dlq, shard) = match place(&state, &headers)? {
        Where::Here(dlq, shard) => (dlq, shard),
        Where::Owners(cluster) => {
            let id = cluster_id(&id)?;
            return route(
                &cluster,
                &headers,
                reqwest::Method::POST,
                id,
                "/discard",
                Some(json!({})),
            )
            .await;
        }
    };
    let id = local_id(&id, shard)?;
    let entry = dlq.discard(&caller.name, id).await?;
    Ok(Json(out(json!(entry), shard)).into_response())
}
