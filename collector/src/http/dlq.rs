//! The dead-letter API (admin scope): list and show entries, replay one or many (with dry
//! run, `max`, `rate`), follow a replay job, discard.
//!
//! - `GET  /api/v1/dlq?task=&error=&state=&from=&to=&limit=` → `{"entries": [...], "total"}`
//!   (`total` counts every match; `entries` are the first `limit`, oldest first)
//! - `GET  /api/v1/dlq/{id}` → the entry
//! - `POST /api/v1/dlq/{id}/replay` → sends it now and answers with the entry and job
//! - `POST /api/v1/dlq/replay` with a JSON body `{task, error, state, from, to, max, ids,
//!   rate, dry_run, wait}` (`ids` instead of the filters) → `dry_run`: what would be sent (entry,
//!   url, idempotency key and request body) and what is refused; otherwise a job
//!   `{"job": {...}}` (202, or 200 with the finished job when `wait` is true)
//! - `GET  /api/v1/dlq/jobs/{id}` → a job's progress
//! - `POST /api/v1/dlq/{id}/discard` → the entry, now `discarded`

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::config::Scope;
use crate::dlq::{DlqError, Filter, Selection, StoreError};
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

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<FilterParams>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let filter = params.filter()?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let dlq = state.dlq.clone();
    let mut entries = tokio::task::spawn_blocking(move || dlq.store().list(&filter, usize::MAX))
        .await
        .map_err(|e| ApiError::internal("listing dead letters", &e))?
        .map_err(DlqError::from)?;
    // `total` counts every match; `entries` holds the first `limit`, oldest first.
    let total = entries.len();
    entries.truncate(limit);
    Ok(Json(json!({ "total": total, "entries": entries })))
}

pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let entry = state.dlq.store().get(id).map_err(DlqError::from)?;
    match entry {
        Some(e) => Ok(Json(json!(e))),
        None => Err(DlqError::Store(StoreError::NotFound(id)).into()),
    }
}

pub(super) async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    match state.dlq.store().job(id).map_err(DlqError::from)? {
        Some(j) => Ok(Json(json!(j))),
        None => Err(DlqError::Store(StoreError::NotFound(id)).into()),
    }
}

pub(super) async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let Some(entry) = state.dlq.store().get(id).map_err(DlqError::from)? else {
        return Err(DlqError::Store(StoreError::NotFound(id)).into());
    };
    if let Err(why) = state.dlq.check(&entry) {
        return Err(
            ApiError::new(StatusCode::CONFLICT, format!("entry {id}: {why}"))
                .with("entry", json!(entry)),
        );
    }
    let job = state.dlq.replay(&caller.name, vec![id], None).await?;
    let job = state.dlq.wait(job.id).await?;
    let entry = state.dlq.store().get(id).map_err(DlqError::from)?;
    Ok(Json(json!({ "job": job, "entry": entry })))
}

/// The body of `POST /api/v1/dlq/replay`.
#[derive(Debug, Default, Deserialize)]
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
    ids: Vec<u64>,
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
    let max = body.max.unwrap_or(usize::MAX);
    let dlq = state.dlq.clone();
    let ids = body.ids.clone();
    let sel = tokio::task::spawn_blocking(move || {
        if ids.is_empty() {
            dlq.select(&filter, max)
        } else {
            dlq.select_ids(&ids)
        }
    })
    .await
    .map_err(|e| ApiError::internal("selecting dead letters", &e))??;
    let mut answer = selection_json(&sel);
    answer["dry_run"] = json!(body.dry_run);
    if body.dry_run || sel.send.is_empty() {
        return Ok((StatusCode::OK, Json(answer)));
    }
    let ids = sel.send.iter().map(|(e, _)| e.id).collect();
    let job = state.dlq.replay(&caller.name, ids, body.rate).await?;
    if body.wait {
        answer["job"] = json!(state.dlq.wait(job.id).await?);
        return Ok((StatusCode::OK, Json(answer)));
    }
    answer["job"] = json!(job);
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

pub(super) async fn discard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let entry = state.dlq.discard(&caller.name, id).await?;
    Ok(Json(json!(entry)))
}
