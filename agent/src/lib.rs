//! spoor-agent: the per-host daemon that takes log lines from tasks and files and gets them
//! to the collector without losing any it accepted.
//!
//! Data flows one way:
//!
//! ```text
//! inputs (socket, file) → enrich → batch → disk buffer → forward → collector
//! ```
//!
//! - `inputs`: lines over TCP/Unix sockets, tailed files and the SDK's spill files (read
//!   positions travel with the lines into the buffer, so a restart neither skips nor
//!   repeats a line), syslog over TCP.
//! - `enrich`: the lenient decoder, then [`redact`] (secrets removed or protected), then
//!   `agent`, `source`, `host`, `ts`.
//! - `batch`: groups lines into buffer records; applies the full-buffer policy.
//! - [`buffer`]: the crash-safe disk buffer ("delete only after ack"), its records sealed
//!   with AES-256-GCM ([`crypto`]).
//! - `forward`: POSTs records to `/api/v1/ingest` with an idempotency key
//!   `{agent_id}-{record_id}`, retries forever with backoff, dead-letters 4xx answers.
//! - `admin`: `/healthz` and `/metrics`.
//! - `tls`: rustls (ring provider) for an `https://` collector; `forward.ca_file` or the
//!   system's trust store.
//!
//! Signals: SIGTERM (and Ctrl-C) stop the agent in order (see [`run`]). SIGHUP reloads
//! the configuration where that is safe (redaction, batch limits, added file globs);
//! settings that need a restart are logged as such and keep their old value, and a
//! configuration that does not load is rejected with the old one kept (see `reload`, and
//! [`run_reloadable`]).
//!
//! # What "nothing lost" covers
//!
//! - **Files and spill files**: exactly once across kill -9. Each buffer record carries the
//!   read positions its lines reached, so lines and positions are durable together
//!   (`inputs::positions` documents the checkpoint and the recovery on start); the
//!   collector answers a resent batch (same idempotency key) as a duplicate.
//! - **TCP, Unix socket and syslog**: these have no per-line acknowledgement. A line the
//!   agent has read is in the buffer within the fsync interval and is never lost after
//!   that, but a line still in the kernel's socket buffers (or in the agent's memory
//!   before the batch was written) when the agent is killed is lost to the agent: it is
//!   the sender's to resend. The SDK's spill files exist for this reason.
//!
//! It owns neither the wire format (that is `spoor-sdk`) nor the command line (that is the
//! `spoor` binary, which builds an [`AgentConfig`] and calls [`run`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), spoor_agent::AgentError> {
//! let mut config = spoor_agent::AgentConfig::load(None)?;
//! config.data_dir = "/tmp/spoor-agent".into();
//! spoor_agent::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod admin;
mod batch;
mod batch_record;
pub mod buffer;
mod buffer_handle;
pub mod cli;
pub mod config;
pub mod crypto;
mod enrich;
mod error;
mod forward;
mod identity;
mod inputs;
mod metrics;
pub mod redact;
mod reload;
mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};

pub use batch::BatchConfig;
pub use config::{AgentConfig, BufferSettings, ConfigError, FullPolicy, ListenAddr, Secret};
pub use error::AgentError;
pub use forward::{Compression, DEADLETTER_DIR, ForwardConfig};
pub use identity::AGENT_ID_FILE;
pub use reload::{ConfigSource, ReloadError};

use batch::{BatchState, Batcher};
use buffer::DiskBuffer;
use buffer_handle::BufferHandle;
use enrich::Enricher;
use forward::Forwarder;
use inputs::file::{FileInput, GlobPattern};
use inputs::positions::{Positions, split_header};
use inputs::socket::{self, SocketContext};
use inputs::spill::SpillCleanup;
use metrics::Metrics;

/// Lines waiting between the inputs and the batcher.
const CHANNEL_CAPACITY: usize = 4096;

/// The tokio runtime the agent binaries run [`run`] on: multi-threaded, with the blocking
/// pool (disk buffer I/O) capped at [`MAX_BLOCKING_THREADS`] threads. Every thread that
/// allocates gets its own glibc malloc arena, so an uncapped pool (512 by default) lets the
/// resident set grow well past the data actually held; with the cap the agent stays
/// under 50 MiB at full load (see BENCHMARKS.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Most threads in the agent runtime's blocking pool (see [`runtime`]). The buffer is one
/// mutex, so more threads would only wait.
pub const MAX_BLOCKING_THREADS: usize = 2;

/// Runs the agent until `shutdown` completes, then stops: inputs stop reading, the batcher
/// writes the last batch and fsyncs the buffer and read positions, requests in flight get
/// `forward.shutdown_grace` to finish. Unacknowledged batches stay in the buffer and are
/// sent on the next start. SIGHUP is caught and logged but reloads nothing (there is no
/// source to reload from); see [`run_reloadable`].
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with(config, None, shutdown).await
}

/// Like [`run`], and on SIGHUP builds the configuration again with `source` (normally
/// the same file, flags and environment the first one came from) and applies what can
/// change at run time.
pub async fn run_reloadable(
    config: AgentConfig,
    source: ConfigSource,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with(config, Some(source), shutdown).await
}

async fn run_with(
    config: AgentConfig,
    source: Option<ConfigSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    config.validate()?;
    let hup = reload::Reloader::catch_sighup();
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::Io {
        path: data_dir.clone(),
        source,
    })?;
    let token = match &config.token {
        Some(t) => Some(t.clone()),
        None => config.resolve_token(None)?,
    };
    let dir = data_dir.clone();
    let agent_id = tokio::task::spawn_blocking(move || identity::load_or_create_agent_id(&dir))
        .await
        .map_err(|e| AgentError::Task(e.to_string()))??;
    let dir = data_dir.clone();
    let mut positions = Positions::load(&data_dir)?;
    let mut buffer_config = config.buffer.buffer_config();
    // Keep the records the checkpoint does not cover until their positions are read.
    buffer_config.keep_from_id = Some(positions.through() + 1);
    let cipher = config.encryption.cipher(&data_dir)?;
    let buffer = tokio::task::spawn_blocking(move || {
        let mut buffer = DiskBuffer::open_with_cipher(&dir, buffer_config, cipher)?;
        // Quarantined segments whose key is configured now come back as new records; the
        // file positions they carried are stale by now, so only their lines are kept.
        // A failure here must not stop the agent: the segments stay in quarantine.
        if let Err(e) = buffer.restore_quarantined(|content| split_header(&content).1.to_vec())
        {
            tracing::error!(error = %e, "Could not restore quarantined buffer segments; they stay in quarantine until a later start.");
        }
        Ok::<_, buffer::BufferError>(buffer)
    })
    .await
    .map_err(|e| AgentError::Task(e.to_string()))??;
    let buffer = BufferHandle::new(buffer);
    recover_positions(&buffer, &mut positions).await?;
    let resume = positions.snapshot();
    let positions = Arc::new(Mutex::new(positions));
    let metrics = Arc::new(Metrics::default());
    let redactor = redact::RedactorSlot::default();
    if config.redaction {
        let r = Arc::new(redact::Redactor::new(&config.redact, &data_dir)?);
        metrics.redaction.store(Some(r.stats()));
        redactor.store(Some(r));
    } else {
        tracing::warn!("Redaction is off (redaction = false): secrets in lines are kept.");
    }
    let enricher = Arc::new(
        Enricher::new(
            agent_id.clone(),
            identity::host_name(),
            config.max_line_bytes,
        )
        .with_redactor(redactor.clone()),
    );
    tracing::info!(agent_id, data_dir = %data_dir.display(), collector = %config.collector, "Agent starting.");

    // Bind everything first so a taken port fails the start, not a background task.
    let mut listeners = Vec::new();
    for addr in config.listen_addrs() {
        listeners.push(socket::bind(&addr).await?);
        tracing::info!(%addr, "Listening for lines.");
    }
    let syslog_listener = match config.syslog {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Bind {
                    addr: format!("syslog {addr}"),
                    source,
                })?;
            tracing::info!(%addr, "Listening for syslog over TCP.");
            Some(l)
        }
        None => None,
    };
    let admin_listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.admin.to_string(),
            source,
        })?;
    // Always our own rustls config (ring): reqwest is built without a provider of its own.
    let ca_file = if config.collector.starts_with("https://") {
        config.forward.ca_file.as_deref()
    } else {
        None
    };
    let client = reqwest::Client::builder()
        .timeout(config.forward.request_timeout)
        .connect_timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls::client_config(ca_file)?)
        .build()
        .map_err(AgentError::HttpClient)?;

    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (inputs_stop, inputs_stop_rx) = watch::channel(false);
    let (forward_stop, forward_stop_rx) = watch::channel(false);
    let forward_wake = Arc::new(Notify::new());

    let mut input_tasks = tokio::task::JoinSet::new();
    let socket_ctx = SocketContext {
        tx: tx.clone(),
        enricher: enricher.clone(),
        metrics: metrics.clone(),
        max_line_bytes: config.max_line_bytes,
        connections: Arc::new(Semaphore::new(config.max_connections)),
    };
    for listener in listeners {
        input_tasks.spawn(socket::serve(
            listener,
            socket_ctx.clone(),
            inputs_stop_rx.clone(),
        ));
    }
    if let Some(l) = syslog_listener {
        input_tasks.spawn(inputs::syslog::serve(
            l,
            socket_ctx.clone(),
            inputs_stop_rx.clone(),
        ));
    }
    drop(socket_ctx);
    let file_stop = Arc::new(AtomicBool::new(false));
    // Globs added to `files` by a reload go to the running file input.
    let mut file_globs = None;
    let file_thread = if config.files.is_empty() && config.spill_dirs.is_empty() {
        None
    } else {
        let (globs_tx, globs_rx) = std::sync::mpsc::channel();
        file_globs = Some(globs_tx);
        let mut patterns = config
            .files
            .iter()
            .map(|p| {
                GlobPattern::parse(p).map_err(|message| ConfigError::Invalid {
                    key: "files",
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        patterns.extend(config.spill_dirs.iter().map(|d| GlobPattern::spill_dir(d)));
        let spill = (!config.spill_dirs.is_empty()).then(|| SpillCleanup {
            positions: positions.clone(),
            buffer: buffer.clone(),
        });
        let input = FileInput {
            patterns,
            tx: tx.clone(),
            enricher: enricher.clone(),
            metrics: metrics.clone(),
            max_line_bytes: config.max_line_bytes,
            resume,
            stop: file_stop.clone(),
            scan_interval: Duration::from_millis(250),
            read_interval: Duration::from_millis(100),
            partial_timeout: Duration::from_secs(1),
            spill,
            added: Some(globs_rx),
        };
        let handle = std::thread::Builder::new()
            .name("spoor-file-input".into())
            .spawn(move || input.run())
            .map_err(|e| AgentError::Task(format!("starting the file input thread: {e}")))?;
        Some(handle)
    };
    drop(tx);

    let (batch_tuning, batch_tuning_rx) = watch::channel(config.batch.clone());
    let batcher = Batcher {
        rx,
        buffer: buffer.clone(),
        config: config.batch.clone(),
        tuning: batch_tuning_rx,
        policy: config.buffer.when_full,
        positions,
        metrics: metrics.clone(),
        enricher,
        forward_wake: forward_wake.clone(),
        shutdown: inputs_stop_rx.clone(),
        state: BatchState::default(),
    };
    let mut batcher_task = tokio::spawn(batcher.run());

    let forwarder = Arc::new(Forwarder {
        buffer: buffer.clone(),
        client,
        url: format!("{}/api/v1/ingest", config.collector.trim_end_matches('/')),
        agent_id,
        token,
        config: config.forward.clone(),
        metrics: metrics.clone(),
        wake: forward_wake,
        deadletter_dir: data_dir.join(DEADLETTER_DIR),
    });
    let forward_task = tokio::spawn(forwarder.run(forward_stop_rx.clone()));
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::AdminState {
            metrics: metrics.clone(),
            buffer: buffer.clone(),
        },
        forward_stop_rx,
    ));
    let hup_task = tokio::spawn(
        reload::Reloader {
            source,
            current: config,
            redactor,
            batch_tuning,
            file_globs,
            metrics,
        }
        .run(hup),
    );

    // Run until asked to stop, or until the batcher fails (the buffer is unusable).
    let mut early = None;
    tokio::select! {
        () = shutdown => {}
        r = &mut batcher_task => early = Some(r),
    }
    tracing::info!("Agent stopping.");
    let _ = inputs_stop.send(true);
    file_stop.store(true, Ordering::Relaxed);
    while input_tasks.join_next().await.is_some() {}
    if let Some(handle) = file_thread {
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("The file input thread panicked.");
        }
    }
    let batch_result = match early {
        Some(r) => r,
        None => batcher_task.await,
    };
    let _ = forward_stop.send(true);
    let _ = forward_task.await;
    let _ = admin_task.await;
    hup_task.abort();
    let synced = buffer.run(|b| b.flush_and_sync()).await;
    tracing::info!("Agent stopped.");
    batch_result.map_err(|e| AgentError::Task(e.to_string()))??;
    synced?;
    Ok(())
}

/// Overrides the checkpointed file positions with those of the records written after it
/// (see [`inputs::positions`]), persists the result and lets the buffer release the
/// segments it kept for this.
async fn recover_positions(
    buffer: &BufferHandle,
    positions: &mut Positions,
) -> Result<(), AgentError> {
    let through = positions.through();
    let (records, durable) = buffer
        .run(move |b| (b.contents_after(through), b.durable_id()))
        .await;
    let mut updates = Vec::new();
    let mut found = 0usize;
    for (id, content) in records? {
        if let (Some(p), _) = split_header(&content) {
            found += 1;
            updates.extend(
                p.into_iter()
                    .map(|p| inputs::positions::FilePosition { record: id, ..p }),
            );
        }
    }
    if found > 0 {
        tracing::info!(
            records = found,
            "Recovered file read positions from buffer records newer than the checkpoint."
        );
    }
    positions.commit(updates, durable)?;
    buffer.run(|b| b.keep_from(None)).await;
    Ok(())
}
