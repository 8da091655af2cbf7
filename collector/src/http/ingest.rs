//! `POST /api/v1/ingest`: a batch of logfmt lines, answered only once it is in the audit
//! log and fsynced (in cluster mode: once JetStream acknowledged it). The
//! `Idempotency-Key` header makes a retried batch a no-op.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::audit::AppendOutcome;
use crate::config::Scope;
use crate::ingest::{BodyError, Encoding, decode_body, split_lines};

/// Longest accepted `Idempotency-Key` / agent name.
const MAX_KEY_LEN: usize = 200;

pub(super) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let reject = |e: ApiError| {
        state
            .metrics
            .ingest_rejected
            .fetch_add(1, Ordering::Relaxed);
        e
    };
    let caller = state.auth.check(&headers, Scope::Ingest).map_err(reject)?;
    let body = body.map_err(|r| {
        reject(ApiError::new(
            r.status(),
            format!(
                "{}; the limit is {} bytes (max_body_bytes): send smaller batches",
                r.body_text(),
                state.config.max_body_bytes
            ),
        ))
    })?;
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let encoding =
        Encoding::from_header(header_text(header::CONTENT_ENCODING.as_str())).map_err(|e| {
            reject(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                e.to_string(),
            ))
        })?;
    let batch_key = header_text("idempotency-key")
        .unwrap_or_default()
        .to_string();
    let agent = header_text("x-spoor-agent")
        .unwrap_or(&caller.name)
        .to_string();
    if batch_key.len() > MAX_KEY_LEN || agent.len() > MAX_KEY_LEN {
        return Err(reject(ApiError::bad_request(format!(
            "Idempotency-Key and X-Spoor-Agent must be at most {MAX_KEY_LEN} bytes"
        ))));
    }
    let limit = state.config.max_body_bytes;
    let max_line = state.config.max_line_bytes;
    let decoded = tokio::task::spawn_blocking(move || {
        decode_body(&body, encoding, limit).map(|raw| (raw.len(), split_lines(&raw, max_line)))
    })
    .await
    .map_err(|e| ApiError::internal("decoding the body", &e))?;
    let (bytes, lines) = decoded.map_err(|e| {
        reject(match e {
            BodyError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            _ => ApiError::bad_request(e.to_string()),
        })
    })?;
    let count = lines.len();
    if let Some(cluster) = &state.cluster
        && count > 0
    {
        let published = cluster
            .publish(&agent, &batch_key, &lines)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "Publishing a batch to JetStream failed.");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the batch could not be stored in NATS JetStream; retry later",
                )
                .with("retry_after_secs", 1)
            })?;
        let m = &state.metrics;
        if published.duplicate {
            m.ingest_duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            m.ingest_batches.fetch_add(1, Ordering::Relaxed);
            m.ingest_lines.fetch_add(count as u64, Ordering::Relaxed);
            m.ingest_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        return Ok(Json(json!({
            "accepted": if published.duplicate { 0 } else { count },
            "duplicate": published.duplicate,
            "shard": published.shard,
            "stream_seq": published.stream_seq,
        })));
    }
    let outcome = state
        .writer
        .append(batch_key, agent, lines)
        .await
        .map_err(|e| ApiError::internal("appending to the audit log", &e))?;
    let m = &state.metrics;
    match outcome {
        AppendOutcome::Appended { seqs } => {
            m.ingest_batches.fetch_add(1, Ordering::Relaxed);
            m.ingest_lines.fetch_add(count as u64, Ordering::Relaxed);
            m.ingest_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            Ok(Json(json!({
                "accepted": count,
                "first_seq": seqs.start,
                "next_seq": seqs.end,
                "duplicate": false,
            })))
        }
        AppendOutcome::Duplicate { seqs } => {
            m.ingest_duplicates.fetch_add(1, Ordering::Relaxed);
            Ok(Json(json!({
                "accepted": 0,
                "first_seq": seqs.start,
                "next_seq": seqs.end,
                "duplicate": true,
            })))
        }
    }
}
