//! `GET /api/v1/alerts` (rules with their state; read scope), `POST /api/v1/alerts/silences`,
//! `DELETE /api/v1/alerts/silences/{id}` (expire one now) and `POST /api/v1/alerts/test`
//! (admin).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::config::{Scope, duration_text};

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    Ok(Json(state.alerts.snapshot()))
}

/// The body of `POST /api/v1/alerts/silences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    /// Label values to match (`alertname` is the rule's name).
    #[serde(default)]
    matchers: BTreeMap<String, String>,
    /// Shorthand for `matchers.alertname`.
    #[serde(default)]
    rule: Option<String>,
    /// How long, like `1h` or `30m`.
    duration: String,
    /// Why.
    #[serde(default)]
    comment: String,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

pub(super) async fn silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let req: SilenceRequest = parse_body(&body)?;
    let duration = duration_text::parse(&req.duration).ok_or_else(|| {
        ApiError::bad_request(format!(
            "duration `{}` is not a duration (write it like 30m, 4h or 1d)",
            req.duration
        ))
    })?;
    let mut matchers = req.matchers;
    if let Some(rule) = req.rule {
        matchers.insert("alertname".into(), rule);
    }
    // Saving the silence fsyncs the state file: keep it off the async workers.
    let alerts = state.alerts.clone();
    let who = caller.name.clone();
    let silence = tokio::task::spawn_blocking(move || {
        alerts.add_silence(matchers, duration, req.comment, who)
    })
    .await
    .map_err(|e| ApiError::internal("saving the silence", &e))?
    .map_err(ApiError::bad_request)?;
    audit_silence(&state, "added", "alerts.silence", &caller.name, &silence).await?;
    Ok((StatusCode::CREATED, Json(silence)))
}

/// `DELETE /api/v1/alerts/silences/{id}`: ends an active silence now (404 when there is
/// none with that id). Audited like adding one.
pub(super) async fn expire_silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let alerts = state.alerts.clone();
    let wanted = id.clone();
    let expired = tokio::task::spawn_blocking(move || alerts.expire_silence(&wanted))
        .await
        .map_err(|e| ApiError::internal("expiring the silence", &e))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no active silence {id}")))?;
    audit_silence(
        &state,
        "expired",
        "alerts.silence.expire",
        &caller.name,
        &expired,
    )
    .await?;
    Ok(Json(expired))
}

/// A change of silences is one of the collector's own actions: it goes to the audit log
/// as `silence <what> by <caller>` with `kind=audit`.
async fn audit_silence(
    state: &AppState,
    what: &str,
    action: &str,
    caller: &str,
    silence: &Value,
) -> Result<(), ApiError> {
    let mut event = spoor_sdk::Event::new();
    event.set_timestamp(time::OffsetDateTime::now_utc());
    event.push("level", "info");
    event.push("msg", format!("silence {what} by {caller}"));
    event.push("kind", "audit");
    event.push("action", action);
    event.push("caller", caller);
    event.push("silence", silence.to_string());
    state
        .writer
        .append("", "collector", vec![event.to_line().into_bytes()])
        .await
        .map_err(|e| ApiError::internal("writing the audit record", &e))?;
    Ok(())
}

/// The body of `POST /api/v1/alerts/test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// The notifier's name.
    notifier: String,
}

pub(super) async fn test(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let req: TestRequest = parse_body(&body)?;
    match state.alerts.test_notifier(&req.notifier).await {
        Ok(status) => Ok(Json(
            json!({ "notifier": req.notifier, "delivered": true, "status": status }),
        )),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e).with("notifier", req.notifier)),
    }
}
