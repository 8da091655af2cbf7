//! The admin HTTP server: `GET /healthz` answers `ok` while the agent runs, and
//! `GET /metrics` renders the counters of [`crate::metrics`] plus the disk buffer's gauges in
//! the Prometheus text format. It only reads; it stops with the agent.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::buffer_handle::BufferHandle;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) buffer: BufferHandle,
}

/// The routes, separate from serving so tests can call them directly.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let stats = state.buffer.run(|b| b.stats()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(Some(&stats)),
    )
}

/// Serves until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "Admin server failed.");
    }
}
