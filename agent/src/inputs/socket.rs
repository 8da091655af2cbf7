//! Newline-delimited lines over TCP and Unix sockets.
//!
//! Each accepted connection gets a task that reads, splits lines ([`LineSplitter`]), enriches
//! them with `source=tcp` or `source=unix` and sends them to the batcher, waiting when the
//! channel is full (so the kernel's socket buffers fill and the sender slows down). At most
//! `max_connections` connections are served at once; more are closed at once and counted.
//! A last line without newline is kept when the peer closes; at shutdown an unfinished line
//! is dropped (the sender never got it acknowledged either). A stale Unix socket file is
//! replaced at bind and removed when the listener stops.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncRead;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, watch};

use super::InputLine;
use super::connection::read_lines;
use super::lines::LineSplitter;
use crate::config::ListenAddr;
use crate::enrich::Enricher;
use crate::error::AgentError;
use crate::metrics::{InputKind, Metrics, inc};

/// What every connection task shares.
#[derive(Debug, Clone)]
pub(crate) struct SocketContext {
    pub(crate) tx: mpsc::Sender<InputLine>,
    pub(crate) enricher: Arc<Enricher>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_line_bytes: usize,
    pub(crate) connections: Arc<Semaphore>,
}

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Binds `addr` (replacing a stale Unix socket file).
pub(crate) async fn bind(addr: &ListenAddr) -> Result<Listener, AgentError> {
    let bind_err = |source| AgentError::Bind {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await.map_err(bind_err)?)),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && meta.file_type().is_socket()
            {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(bind_err)?;
            }
            Ok(Listener::Unix(
                UnixListener::bind(path).map_err(bind_err)?,
                path.clone(),
            ))
        }
    }
}

/// Accepts connections until `shutdown` turns true, then waits for its connection tasks.
pub(crate) async fn serve(
    listener: Listener,
    ctx: SocketContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, kind) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            inc(&ctx.metrics.connections_rejected, 1);
            tracing::warn!(
                input = kind.as_str(),
                "Connection limit reached; refused a connection."
            );
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            match stream {
                Stream::Tcp(s) => handle(s, InputKind::Tcp, &ctx, shutdown).await,
                Stream::Unix(s) => handle(s, InputKind::Unix, &ctx, shutdown).await,
            }
            drop(permit);
        });
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    while tasks.join_next().await.is_some() {}
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, InputKind)> {
    match listener {
        Listener::Tcp(l) => Ok((Stream::Tcp(l.accept().await?.0), InputKind::Tcp)),
        Listener::Unix(l, _) => Ok((Stream::Unix(l.accept().await?.0), InputKind::Unix)),
    }
}

async fn handle<S: AsyncRead + Unpin>(
    stream: S,
    kind: InputKind,
    ctx: &SocketContext,
    shutdown: watch::Receiver<bool>,
) {
    let mut splitter = LineSplitter::new(ctx.max_line_bytes);
    let to_line = |raw: &[u8]| {
        let (line, flags) = ctx.enricher.enrich(raw, kind.as_str());
        (line, flags.truncated)
    };
    // Each line was followed by its newline.
    read_lines(stream, kind, &mut splitter, 1, ctx, shutdown, &to_line).await;
}
