//! The HTTP API. `router(state)` builds the routes and stays apart from serving, so tests
//! can drive handlers without a socket.

mod alerts;
mod auth;
mod dlq;
mod error;
mod ingest;
mod meta;
mod search;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::routing::{delete, get, post};
use tokio::sync::watch;

pub use auth::{Auth, Caller};
pub use error::ApiError;

use crate::audit::AuditWriter;
use crate::config::CollectorConfig;
use crate::index::LogIndex;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub config: Arc<CollectorConfig>,
    /// Appends to the audit log (group commit).
    pub writer: Arc<AuditWriter>,
    /// The search index.
    pub index: LogIndex,
    /// Token checks.
    pub auth: Auth,
    /// The seq below which everything is searchable.
    pub indexed: watch::Receiver<u64>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Alert rules, their states and silences.
    pub alerts: crate::alerts::Alerts,
    /// The dead-letter store and its replay jobs.
    pub dlq: Arc<crate::dlq::Dlq>,
    /// Cluster mode: ingest goes to JetStream and reads fan out to the shard owners.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Counters of the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Batches appended.
    pub ingest_batches: AtomicU64,
    /// Lines appended.
    pub ingest_lines: AtomicU64,
    /// Decompressed bytes received.
    pub ingest_bytes: AtomicU64,
    /// Batches answered as duplicates.
    pub ingest_duplicates: AtomicU64,
    /// Ingest requests refused (bad body, auth, size).
    pub ingest_rejected: AtomicU64,
    /// Searches run.
    pub searches: AtomicU64,
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route("/api/v1/search", get(search::search))
        .route("/api/v1/histogram", get(search::histogram))
        .route("/api/v1/fields", get(search::fields))
        .route("/api/v1/tail", get(search::tail))
        .route("/api/v1/context", get(search::context))
        .route("/api/v1/audit/checkpoint", get(meta::checkpoint))
        .route("/api/v1/cluster", get(meta::cluster))
        .route("/api/v1/dlq", get(dlq::list))
        .route("/api/v1/dlq/replay", post(dlq::replay_query))
        .route("/api/v1/dlq/jobs/{id}", get(dlq::job))
        .route("/api/v1/dlq/{id}", get(dlq::show))
        .route("/api/v1/dlq/{id}/replay", post(dlq::replay_one))
        .route("/api/v1/dlq/{id}/discard", post(dlq::discard))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/silences", post(alerts::silence))
        .route(
            "/api/v1/alerts/silences/{id}",
            delete(alerts::expire_silence),
        )
        .route("/api/v1/alerts/test", post(alerts::test))
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .merge(crate::ui::routes())
        .fallback(meta::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The public key as hex, the way it is logged and served.
pub fn hex_public_key(key: &[u8]) -> String {
    meta::hex(key)
}
