//! [`AuditWriter`]: group commit in front of an [`AuditLog`].
//!
//! A dedicated thread owns the log. Async callers send append requests over a bounded
//! channel (capacity [`QUEUE_CAPACITY`], which gives backpressure); the thread takes
//! every request that is waiting, appends them all, fsyncs **once**, publishes the new
//! committed seq, and only then answers each caller. A batch whose key is already in the
//! log (or earlier in the same group) is answered as [`AppendOutcome::Duplicate`]
//! without appending. Between groups the thread signs checkpoints when due, also when
//! idle.
//!
//! Shutdown: [`AuditWriter::shutdown`] (or dropping the writer) lets the thread finish
//! the requests already queued, fsync, sign a final checkpoint and close the log.
//! Requests that arrive later fail with [`AuditError::WriterClosed`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::{Checkpoint, PUBLIC_KEY_LEN};
use super::error::AuditError;
use super::log::{AuditLog, unix_nanos};

/// How many append requests may wait for the writer thread.
pub const QUEUE_CAPACITY: usize = 1024;
/// At most this many requests are committed with one fsync.
const MAX_GROUP: usize = 1024;
/// After a failed checkpoint, wait this long before trying again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// The answer to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was appended and is durable.
    Appended {
        /// Its records.
        seqs: Range<u64>,
    },
    /// A batch with this key is already in the log (and durable); nothing was appended.
    Duplicate {
        /// The records of the earlier batch.
        seqs: Range<u64>,
    },
}

/// Counters of the writer thread, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// fsyncs of segment data.
    pub fsyncs: u64,
    /// Groups committed.
    pub groups: u64,
    /// Batches appended.
    pub batches_appended: u64,
    /// Batches answered as duplicates.
    pub duplicates: u64,
}

#[derive(Default)]
struct Counters {
    fsyncs: AtomicU64,
    groups: AtomicU64,
    batches_appended: AtomicU64,
    duplicates: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

enum Command {
    Append {
        batch_key: String,
        agent: String,
        lines: Vec<Vec<u8>>,
        reply: Reply<AppendOutcome>,
    },
    Shutdown {
        reply: Reply<()>,
    },
    Retain {
        keep_from_seq: u64,
        reply: Reply<usize>,
    },
}

/// What the thread publishes to the handles.
struct Published {
    committed: watch::Sender<u64>,
    head: watch::Sender<(u64, [u8; 32])>,
    checkpoint: watch::Sender<Option<Checkpoint>>,
    counters: Arc<Counters>,
}

/// Handle to the group-commit writer thread. Share it with `Arc`.
#[derive(Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    head: watch::Receiver<(u64, [u8; 32])>,
    checkpoint: watch::Receiver<Option<Checkpoint>>,
    counters: Arc<Counters>,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

impl AuditWriter {
    /// Starts the writer thread, which owns `log` from now on.
    pub fn spawn(log: AuditLog) -> Result<AuditWriter, AuditError> {
        let io_err = |source| AuditError::Io {
            op: "starting the audit writer thread for",
            path: log.data_dir().to_path_buf(),
            source,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(io_err)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (committed_tx, committed) = watch::channel(log.next_seq());
        let (head_tx, head) = watch::channel((log.next_seq(), log.head_hash()));
        let (checkpoint_tx, checkpoint) = watch::channel(log.latest_checkpoint().cloned());
        let counters = Arc::new(Counters::default());
        let public_key = log.public_key();
        let published = Published {
            committed: committed_tx,
            head: head_tx,
            checkpoint: checkpoint_tx,
            counters: counters.clone(),
        };
        let data_dir = log.data_dir().to_path_buf();
        std::thread::Builder::new()
            .name("spoor-audit-writer".to_string())
            .spawn(move || run(log, rx, rt, published))
            .map_err(|source| AuditError::Io {
                op: "starting the audit writer thread for",
                path: data_dir,
                source,
            })?;
        Ok(AuditWriter {
            tx,
            committed,
            head,
            checkpoint,
            counters,
            public_key,
        })
    }

    /// Appends one batch and waits until it is durable (or answers that it is a
    /// duplicate). An empty `batch_key` is never deduplicated.
    pub async fn append(
        &self,
        batch_key: impl Into<String>,
        agent: impl Into<String>,
        lines: Vec<Vec<u8>>,
    ) -> Result<AppendOutcome, AuditError> {
        self.submit(batch_key.into(), agent.into(), lines)
            .await?
            .await
    }

    /// Queues one batch and returns the future of its outcome. Batches submitted one
    /// after the other are appended in that order, and those waiting together share one
    /// fsync (a shard owner appends a whole fetch from JetStream this way).
    pub async fn submit(
        &self,
        batch_key: String,
        agent: String,
        lines: Vec<Vec<u8>>,
    ) -> Result<impl Future<Output = Result<AppendOutcome, AuditError>> + use<>, AuditError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Append {
            batch_key,
            agent,
            lines,
            reply,
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| AuditError::WriterClosed)?;
        Ok(async move { answer.await.map_err(|_| AuditError::WriterClosed)? })
    }

    /// The committed head: every record with a seq below the value is durable. Followers
    /// wait on it with `changed()`.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The committed head: the seq of the next record and the chain hash of the last
    /// durable one (cluster mode names it in the shard lease).
    pub fn head(&self) -> (u64, [u8; 32]) {
        *self.head.borrow()
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint.borrow().clone()
    }

    /// The Ed25519 public key that verifies the checkpoints.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public_key
    }

    /// The thread's counters so far.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            batches_appended: c.batches_appended.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Removes whole segments below `keep_from_seq` (see [`AuditLog::apply_retention`]);
    /// returns how many were removed.
    pub async fn retain(&self, keep_from_seq: u64) -> Result<usize, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Retain {
                keep_from_seq,
                reply,
            })
            .await
            .map_err(|_| AuditError::WriterClosed)?;
        answer.await.map_err(|_| AuditError::WriterClosed)?
    }

    /// Commits what is queued, signs a final checkpoint, closes the log and stops the
    /// thread. Returns the result of the final sync and checkpoint.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Shutdown { reply })
            .await
            .map_err(|_| AuditError::WriterClosed)?;
        answer.await.map_err(|_| AuditError::WriterClosed)?
    }
}

/// The writer thread.
fn run(
    mut log: AuditLog,
    mut rx: mpsc::Receiver<Command>,
    rt: tokio::runtime::Runtime,
    out: Published,
) {
    let mut shutdown_replies = Vec::new();
    let mut retry_checkpoint_at: Option<Instant> = None;
    loop {
        let mut wait = log.checkpoint_due_in(SystemTime::now());
        if let (Some(w), Some(at)) = (wait.as_mut(), retry_checkpoint_at) {
            *w = (*w).max(at.saturating_duration_since(Instant::now()));
        }
        let first = match wait {
            // The timer must be created inside the runtime, hence the `async` block.
            Some(d) => match rt.block_on(async { tokio::time::timeout(d, rx.recv()).await }) {
                Ok(cmd) => cmd,
                Err(_elapsed) => {
                    checkpoint_if_due(&mut log, &out, &mut retry_checkpoint_at);
                    continue;
                }
            },
            None => rt.block_on(rx.recv()),
        };
        // `None`: every handle was dropped, which also means shut down.
        let Some(first) = first else { break };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        let stop = commit_group(&mut log, group, &out, &mut shutdown_replies);
        checkpoint_if_due(&mut log, &out, &mut retry_checkpoint_at);
        if stop {
            break;
        }
    }

    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            Command::Append { reply, .. } => {
                let _ = reply.send(Err(AuditError::WriterClosed));
            }
            Command::Shutdown { reply } => shutdown_replies.push(reply),
            Command::Retain { reply, .. } => {
                let _ = reply.send(Err(AuditError::WriterClosed));
            }
        }
    }
    let result = log.sync().and_then(|()| {
        if log.unsigned_records() > 0 {
            log.write_checkpoint()?;
        }
        Ok(())
    });
    out.counters
        .fsyncs
        .store(log.fsync_count(), Ordering::Relaxed);
    out.checkpoint
        .send_replace(log.latest_checkpoint().cloned());
    if result.is_ok() {
        out.head.send_replace((log.next_seq(), log.head_hash()));
        out.committed.send_replace(log.next_seq());
    }
    drop(log);
    match &result {
        Ok(()) => tracing::info!("Audit writer stopped."),
        Err(e) => tracing::error!(error = %e, "Audit writer stopped after a failed final commit."),
    }
    let reason = result.err().map(|e| e.to_string());
    for reply in shutdown_replies {
        let answer = match &reason {
            None => Ok(()),
            Some(reason) => Err(AuditError::CommitFailed {
                reason: reason.clone(),
            }),
        };
        let _ = reply.send(answer);
    }
}

/// Appends every request of the group, fsyncs once, then answers. Returns whether a
/// shutdown was requested.
fn commit_group(
    log: &mut AuditLog,
    group: Vec<Command>,
    out: &Published,
    shutdown_replies: &mut Vec<Reply<()>>,
) -> bool {
    let ingest_ts = unix_nanos(SystemTime::now());
    let mut answers = Vec::with_capacity(group.len());
    let mut stop = false;
    for cmd in group {
        match cmd {
            Command::Append {
                batch_key,
                agent,
                lines,
                reply,
            } => {
                let earlier = if batch_key.is_empty() {
                    None
                } else {
                    log.seen_batch(&batch_key)
                };
                let outcome = match earlier {
                    Some(seqs) => Ok(AppendOutcome::Duplicate { seqs }),
                    None => log
                        .append_batch(&batch_key, &agent, ingest_ts, &lines)
                        .map(|seqs| AppendOutcome::Appended { seqs }),
                };
                answers.push((reply, outcome));
            }
            Command::Shutdown { reply } => {
                shutdown_replies.push(reply);
                stop = true;
            }
            Command::Retain {
                keep_from_seq,
                reply,
            } => {
                // Retention writes its own signed checkpoint before removing anything.
                let _ = reply.send(log.sync().and_then(|()| log.apply_retention(keep_from_seq)));
            }
        }
    }
    if let Err(e) = log.sync() {
        // Nothing of this group may be acknowledged.
        let reason = e.to_string();
        tracing::error!(error = %reason, batches = answers.len(), "Audit commit failed.");
        for (_, outcome) in answers.iter_mut() {
            if outcome.is_ok() {
                *outcome = Err(AuditError::CommitFailed {
                    reason: reason.clone(),
                });
            }
        }
    } else {
        out.head.send_replace((log.next_seq(), log.head_hash()));
        out.committed.send_replace(log.next_seq());
    }
    let c = &out.counters;
    c.fsyncs.store(log.fsync_count(), Ordering::Relaxed);
    c.groups.fetch_add(1, Ordering::Relaxed);
    for (reply, outcome) in answers {
        match &outcome {
            Ok(AppendOutcome::Appended { .. }) => {
                c.batches_appended.fetch_add(1, Ordering::Relaxed)
            }
            Ok(AppendOutcome::Duplicate { .. }) => c.duplicates.fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
        // The caller may have given up waiting; that is fine.
        let _ = reply.send(outcome);
    }
    stop
}

fn checkpoint_if_due(log: &mut AuditLog, out: &Published, retry_at: &mut Option<Instant>) {
    if retry_at.is_some_and(|at| Instant::now() < at) {
        return;
    }
    match log.checkpoint_if_due(SystemTime::now()) {
        Ok(Some(cp)) => {
            *retry_at = None;
            out.checkpoint.send_replace(Some(cp));
        }
        Ok(None) => *retry_at = None,
        Err(e) => {
            tracing::error!(error = %e, "Signing an audit checkpoint failed.");
            *retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
        }
    }
}
