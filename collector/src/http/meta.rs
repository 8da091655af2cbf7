//! Health, metrics (Prometheus text), the latest audit checkpoint, and the JSON 404.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::config::Scope;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md")
}

pub(super) async fn checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    let public_key = hex(&state.writer.public_key());
    match state.writer.latest_checkpoint() {
        Some(c) => {
            let mut body: Value = serde_json::from_str(&c.to_json())
                .map_err(|e| ApiError::internal("reading the checkpoint", &e))?;
            body["public_key"] = json!(public_key);
            Ok(Json(body))
        }
        None => Err(
            ApiError::new(StatusCode::NOT_FOUND, "no checkpoint has been signed yet")
                .with("public_key", public_key),
        ),
    }
}

/// `GET /api/v1/cluster`: this collector's view of the cluster (404 when not in cluster
/// mode): its node id, the shards it owns, and every shard's lease as last read.
pub(super) async fn cluster(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Read)?;
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this collector is not in cluster mode (no [cluster] section)",
        ));
    };
    let leases: Vec<Value> = cluster
        .leases()
        .into_iter()
        .enumerate()
        .map(|(shard, e)| match e {
            Some(e) => json!({
                "shard": shard,
                "revision": e.revision,
                "owner": if e.value.released { Value::Null } else { json!(e.value.owner) },
                "url": e.value.url,
                "head": e.value.head,
            }),
            None => json!({ "shard": shard, "owner": null }),
        })
        .collect();
    Ok(Json(json!({
        "node_id": cluster.config().node_id,
        "shards": cluster.config().shards,
        "owned": cluster.owned_shards(),
        "leases": leases,
    })))
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let w = state.writer.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "spoor_ingest_batches_total",
        "Batches appended to the audit log.",
        m.ingest_batches.load(Ordering::Relaxed),
    );
    counter(
        "spoor_ingest_lines_total",
        "Lines appended to the audit log.",
        m.ingest_lines.load(Ordering::Relaxed),
    );
    counter(
        "spoor_ingest_bytes_total",
        "Decompressed bytes received.",
        m.ingest_bytes.load(Ordering::Relaxed),
    );
    counter(
        "spoor_ingest_duplicates_total",
        "Batches answered as duplicates.",
        m.ingest_duplicates.load(Ordering::Relaxed),
    );
    counter(
        "spoor_ingest_rejected_total",
        "Ingest requests refused.",
        m.ingest_rejected.load(Ordering::Relaxed),
    );
    counter(
        "spoor_searches_total",
        "Searches run.",
        m.searches.load(Ordering::Relaxed),
    );
    let a = state.alerts.metrics();
    for (name, help, v) in [
        (
            "spoor_alert_evaluations_total",
            "Alert evaluations run.",
            &a.evaluations,
        ),
        (
            "spoor_alert_evaluation_errors_total",
            "Alert rules that failed to evaluate.",
            &a.evaluation_errors,
        ),
        (
            "spoor_alert_silenced_total",
            "Alert notifications suppressed by a silence.",
            &a.silenced,
        ),
        (
            "spoor_alert_notifications_total",
            "Alert notifications delivered.",
            &a.delivery.sent,
        ),
        (
            "spoor_alert_notification_failures_total",
            "Alert notifications given up on.",
            &a.delivery.failed,
        ),
        (
            "spoor_alert_notification_retries_total",
            "Alert notification attempts retried.",
            &a.delivery.retries,
        ),
    ] {
        counter(name, help, v.load(Ordering::Relaxed));
    }
    counter(
        "spoor_audit_fsyncs_total",
        "fsyncs of the audit log.",
        w.fsyncs,
    );
    counter(
        "spoor_audit_groups_total",
        "Group commits of the audit log.",
        w.groups,
    );
    let _ = writeln!(
        out,
        "# HELP spoor_audit_next_seq Seq below which the audit log is durable.\n# TYPE spoor_audit_next_seq gauge\nspoor_audit_next_seq {}",
        *state.writer.committed().borrow()
    );
    let _ = writeln!(
        out,
        "# HELP spoor_index_next_seq Seq below which everything is searchable.\n# TYPE spoor_index_next_seq gauge\nspoor_index_next_seq {}",
        *state.indexed.borrow()
    );
    // Cluster mode: the dead letters of the shards this collector owns.
    let dlqs: Vec<std::sync::Arc<crate::dlq::Dlq>> = match &state.cluster {
        Some(cluster) => cluster
            .owned_shards()
            .into_iter()
            .filter_map(|k| cluster.owned_dlq(k))
            .collect(),
        None => vec![state.dlq.clone()],
    };
    let dlqs: Vec<&crate::dlq::Dlq> = dlqs.iter().map(|d| d.as_ref()).collect();
    crate::dlq::write_metrics(&mut out, &dlqs);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
