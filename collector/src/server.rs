//! Running the collector: open the audit log and index, start the writer and indexer
//! threads, serve HTTP until `shutdown` resolves, then drain: stop accepting, finish
//! in-flight requests, fsync and sign a final checkpoint, commit the index.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit::{AuditLog, AuditOptions, AuditWriter};
use crate::config::CollectorConfig;
use crate::error::Error;
use crate::http::{AppState, Auth, Metrics, router};
use crate::index::{Indexer, LogIndex};

impl CollectorConfig {
    /// The audit log options these settings ask for.
    pub fn audit_options(&self) -> AuditOptions {
        AuditOptions {
            segment_max_bytes: self.audit.segment_bytes,
            checkpoint_every_records: self.audit.checkpoint_records,
            checkpoint_interval: self.audit.checkpoint_interval,
        }
    }
}

/// Binds the listen address, with an error that says what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Runs the collector on an already bound listener until `shutdown` resolves.
pub async fn run(
    config: CollectorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // reqwest is built with rustls and no default provider (`rustls-no-provider`): the
    // project uses ring, installed once per process before any HTTP client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    config.validate()?;
    let auth = Auth::from_config(&config)?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| {
        Error::Config(crate::error::ConfigError::Read {
            path: data_dir.clone(),
            source,
        })
    })?;
    let options = config.audit_options();
    let dir = data_dir.clone();
    let log = tokio::task::spawn_blocking(move || AuditLog::open(&dir, options))
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))??;
    tracing::info!(
        next_seq = log.next_seq(),
        public_key = %crate::http::hex_public_key(&log.public_key()),
        "Audit log open; checkpoints are signed with this Ed25519 public key."
    );
    let writer = Arc::new(AuditWriter::spawn(log)?);
    let index = LogIndex::open(&data_dir)?;
    let indexer = Indexer::spawn(
        index.clone(),
        data_dir.clone(),
        writer.committed(),
        config.index.clone(),
    )?;
    let dlq = crate::dlq::Dlq::start(&data_dir, config.dlq.clone(), writer.clone())
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
    if auth.is_open() {
        tracing::warn!(listen = %config.listen, "No tokens configured: the API is open to anyone who can reach this loopback address.");
    }
    // Cluster mode: this collector's own log and index keep only its own records (the
    // audit of reads); events live in the shard copies. Alert rules count on every
    // shard and are evaluated by the owner of shard 0 only.
    let (cluster_stop, cluster_stopped) = tokio::sync::watch::channel(false);
    let (cluster, manager) = match &config.cluster {
        Some(_) => {
            let cluster = crate::cluster::Cluster::connect(&config, writer.clone()).await?;
            let manager = cluster.spawn_manager(cluster_stopped);
            (Some(cluster), Some(manager))
        }
        None => (None, None),
    };
    let source = match &cluster {
        Some(cluster) => crate::alerts::CountSource::Cluster {
            cluster: cluster.clone(),
            runtime: tokio::runtime::Handle::current(),
        },
        None => crate::alerts::CountSource::Index(index.clone()),
    };
    let alerts = crate::alerts::Alerts::open_with(&config, source, writer.clone())?;
    let evaluator = alerts.spawn();
    let (retention_stop, retention_stopped) = tokio::sync::watch::channel(false);
    let retention = config.audit.retention.map(|keep| {
        tokio::spawn(crate::retention::run(
            writer.clone(),
            data_dir.clone(),
            keep,
            config.audit.retention_check,
            indexer.retention_floor(),
            retention_stopped,
        ))
    });
    let state = AppState {
        config: Arc::new(config),
        writer: writer.clone(),
        index,
        auth,
        indexed: indexer.indexed(),
        metrics: Arc::new(Metrics::default()),
        alerts,
        dlq: dlq.clone(),
        cluster,
    };
    let local = listener.local_addr().map_err(Error::Serve)?;
    let tls = match &state.config.tls {
        Some(t) => Some(crate::http::tls::server_config(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let app = router(state);
    let served = match tls {
        Some(tls) => {
            tracing::info!(listen = %local, "Collector listening (HTTPS).");
            let listener =
                crate::http::tls::TlsListener::new(listener, tls).map_err(Error::Serve)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            tracing::info!(listen = %local, "Collector listening.");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    tracing::info!("Collector stopping: committing the audit log and index.");
    let _ = retention_stop.send(true);
    if let Some(r) = retention {
        let _ = r.await;
    }
    evaluator.stop().await;
    let _ = cluster_stop.send(true);
    if let Some(manager) = manager {
        // Hands the shards over (released leases) and closes the shard copies.
        let _ = manager.await;
    }
    if let Err(e) = dlq.shutdown() {
        tracing::error!(error = %e, "Stopping the dead-letter store failed.");
    }
    let closed = writer.shutdown().await;
    let indexed = tokio::task::spawn_blocking(move || indexer.shutdown())
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
    served.map_err(Error::Serve)?;
    closed?;
    indexed?;
    Ok(())
}
