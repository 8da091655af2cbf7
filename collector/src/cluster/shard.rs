//! One shard's copy on this collector, and the owner loop that fills it.
//!
//! Layout: `DATA_DIR/shards/<k>/` is an ordinary collector data directory (its `audit/`
//! chain, signed with this collector's key, and its `index/`), so the single-node audit
//! log, indexer and `spoor audit verify` work on it unchanged.
//!
//! What the chain holds:
//! - one record per line of every message of the shard's stream, in stream order, each
//!   message exactly once: the batch key is `js:<stream seq>:r<lease revision>:<the
//!   agent's idempotency key>`, so the chain shows which stream message and which
//!   ownership epoch wrote it;
//! - an **epoch record** (`kind=epoch`, batch key `epoch:r<revision>`) whenever this
//!   collector takes the shard's lease: it names the lease revision (the fencing token),
//!   this copy's last stream seq, and the previous owner with the audit head it reported
//!   in the lease (its `next_seq` and chain hash), which `spoor audit verify --cluster`
//!   checks against that owner's copy.
//!
//! Invariants of the owner loop: messages are appended in stream order; a message whose
//! stream seq is already in the chain is acknowledged and skipped (nothing indexed twice);
//! a message that would leave a hole is not appended but handed back (`nak`) until the
//! missing one is redelivered; messages are acknowledged only after the writer fsynced
//! them; the loop stops appending as soon as the lease may have lapsed (the fence).
//!
//! Each collector reads the stream through its own durable pull consumer, `spoor-<node>`,
//! which remembers how far this copy got: a collector that takes a shard over first
//! catches up on what other owners consumed meanwhile, so its copy (and search through
//! it) is complete even when the previous owner's machine is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use spoor_sdk::event::{Event, keys};
use tokio::sync::watch;

use super::error::ClusterError;
use super::lease::{Entry, ShardHead};
use super::payload;
use crate::audit::{AuditLog, AuditOptions, AuditWriter, read_records};
use crate::config::IndexConfig;
use crate::index::{Indexer, IndexerHandle, LogIndex};

/// Messages asked for per pull.
const FETCH_MESSAGES: usize = 512;
/// How long a pull waits for the first message when the stream has none.
const FETCH_WAIT: Duration = Duration::from_millis(400);
/// JetStream redelivers a message not acknowledged within this.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How much longer than its own wait a pull may take before it is given up.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// A consumer that yields nothing this long while the stream has more is recreated.
const STUCK_AFTER: Duration = Duration::from_secs(3);

/// The stream of a shard.
pub fn stream_name(shard: u32) -> String {
    format!("spoor-shard-{shard}")
}

/// The subject its messages are published on.
pub fn stream_subject(shard: u32) -> String {
    format!("spoor.shard.{shard}")
}

/// The directory of a shard's copy inside a collector's data directory.
pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    data_dir.join("shards").join(shard.to_string())
}

/// The stream seq a chain record was written for (`js:<seq>:...` batch keys).
pub fn stream_seq_of(batch_key: &str) -> Option<u64> {
    batch_key
        .strip_prefix("js:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// This collector's copy of one shard: its audit writer and index.
pub struct ShardReplica {
    /// The shard.
    pub shard: u32,
    /// `DATA_DIR/shards/<k>`.
    pub dir: PathBuf,
    /// Group-commit writer of the shard's chain.
    pub writer: Arc<AuditWriter>,
    /// The shard's index.
    pub index: LogIndex,
    /// The seq below which the shard's copy is searchable.
    pub indexed: watch::Receiver<u64>,
    /// The dead letters of the shard: a store in `DATA_DIR/shards/<k>/dlq/` fed by its
    /// own follower of this copy's chain (`None` when it could not be opened).
    pub dlq: Option<Arc<crate::dlq::Dlq>>,
    indexer: std::sync::Mutex<Option<IndexerHandle>>,
    last_stream_seq: AtomicU64,
}

impl std::fmt::Debug for ShardReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReplica")
            .field("shard", &self.shard)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ShardReplica {
    /// Opens (or creates) the copy of `shard` under `data_dir`, signing with the
    /// collector's own key (copied from `data_dir/audit/` on first use).
    ///
    /// The shard's dead-letter store starts here too; its replay and discard records go
    /// to `node_writer`, the collector's own log.
    pub async fn open(
        data_dir: &Path,
        shard: u32,
        audit: AuditOptions,
        index_config: IndexConfig,
        dlq_config: crate::dlq::DlqConfig,
        node_writer: Arc<AuditWriter>,
    ) -> Result<ShardReplica, ClusterError> {
        let dir = shard_dir(data_dir, shard);
        let node_audit = data_dir.join("audit");
        let d = dir.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<_, ClusterError> {
            let audit_dir = d.join("audit");
            std::fs::create_dir_all(&audit_dir).map_err(|source| ClusterError::Io {
                op: "creating",
                path: audit_dir.clone(),
                source,
            })?;
            for name in ["signing.key", "public.key"] {
                let to = audit_dir.join(name);
                if !to.exists() {
                    std::fs::copy(node_audit.join(name), &to).map_err(|source| {
                        ClusterError::Io {
                            op: "copying the collector's key to",
                            path: to.clone(),
                            source,
                        }
                    })?;
                }
            }
            let log = AuditLog::open(&d, audit)
                .map_err(|source| ClusterError::Audit { shard, source })?;
            let last =
                last_stream_seq(&d).map_err(|source| ClusterError::Audit { shard, source })?;
            Ok((log, last))
        })
        .await
        .map_err(|e| ClusterError::Protocol(format!("opening shard {shard}: {e}")))??;
        let (log, last) = opened;
        let writer = Arc::new(
            AuditWriter::spawn(log).map_err(|source| ClusterError::Audit { shard, source })?,
        );
        let index = LogIndex::open(&dir).map_err(|source| ClusterError::Index { shard, source })?;
        let indexer = Indexer::spawn(index.clone(), dir.clone(), writer.committed(), index_config)
            .map_err(|source| ClusterError::Index { shard, source })?;
        // A broken dead-letter store must not keep the shard's events from being stored
        // and searched: it is logged, and the shard's dead letters answer 503.
        let dlq = match crate::dlq::Dlq::start_following(
            &dir,
            &dir,
            writer.committed(),
            dlq_config,
            node_writer,
            Some(shard),
        ) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(shard, error = %e, "Could not open the shard's dead-letter store.");
                None
            }
        };
        tracing::info!(shard, last_stream_seq = last, "Shard copy open.");
        Ok(ShardReplica {
            shard,
            dir,
            writer,
            index,
            dlq,
            indexed: indexer.indexed(),
            indexer: std::sync::Mutex::new(Some(indexer)),
            last_stream_seq: AtomicU64::new(last),
        })
    }

    /// The last stream seq in this copy's chain.
    pub fn last_stream_seq(&self) -> u64 {
        self.last_stream_seq.load(Ordering::Acquire)
    }

    /// The committed head, as named in the lease.
    pub fn head(&self) -> ShardHead {
        let (next_seq, hash) = self.writer.head();
        ShardHead {
            next_seq,
            hash: crate::http::hex_public_key(&hash),
            stream_seq: self.last_stream_seq(),
        }
    }

    /// Commits and closes the chain and the index.
    pub async fn shutdown(&self) {
        if let Some(dlq) = self.dlq.clone() {
            let shard = self.shard;
            let done = tokio::task::spawn_blocking(move || dlq.shutdown()).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::error!(shard, "Stopping a shard's dead-letter store failed.");
            }
        }
        if let Err(e) = self.writer.shutdown().await {
            tracing::error!(shard = self.shard, error = %e, "Closing a shard's audit log failed.");
        }
        let indexer = self.indexer.lock().ok().and_then(|mut i| i.take());
        if let Some(indexer) = indexer {
            let shard = self.shard;
            let done = tokio::task::spawn_blocking(move || indexer.shutdown()).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::error!(shard, "Closing a shard's index failed.");
            }
        }
    }
}

/// The highest stream seq in a copy's chain (0 when none), read from the newest segment
/// that has one.
fn last_stream_seq(dir: &Path) -> Result<u64, crate::audit::AuditError> {
    let firsts = crate::audit::segment_first_seqs(dir)?;
    for &first in firsts.iter().rev() {
        let mut last = None;
        for record in read_records(dir, first) {
            let record = record?;
            if record.batch_end
                && let Some(s) = stream_seq_of(&record.batch_key)
            {
                last = Some(s);
            }
        }
        if let Some(s) = last {
            return Ok(s);
        }
    }
    Ok(0)
}

/// What an owner loop needs besides the copy.
pub(crate) struct Ownership {
    /// This collector's node id.
    pub node: String,
    /// The lease revision at which the lease was taken: the epoch's fencing token.
    pub revision: u64,
    /// The lease as it was before this collector took it.
    pub previous: Option<Entry>,
    /// Appends stop once `Instant::now()` passes this (renewals push it forward).
    pub fence: watch::Receiver<Instant>,
    /// Set to stop (lease lost, handed over, or shutdown).
    pub stop: watch::Receiver<bool>,
}

/// The line of the epoch record that opens an ownership epoch.
fn epoch_line(shard: u32, own: &Ownership, last_stream_seq: u64) -> Vec<u8> {
    let mut e = Event::new();
    e.set_timestamp(time::OffsetDateTime::now_utc());
    e.push(keys::LEVEL, "info");
    e.push(keys::KIND, "epoch");
    e.push(
        keys::MSG,
        format!(
            "shard {shard} owned by {} from lease revision {}",
            own.node, own.revision
        ),
    );
    e.push("shard", shard.to_string());
    e.push("lease_revision", own.revision.to_string());
    e.push("owner", own.node.clone());
    e.push("stream_seq", last_stream_seq.to_string());
    if let Some(prev) = &own.previous {
        e.push("previous_owner", prev.value.owner.clone());
        e.push("previous_revision", prev.revision.to_string());
        if let Some(h) = &prev.value.head {
            e.push("previous_head_seq", h.next_seq.to_string());
            e.push("previous_head_hash", h.hash.clone());
            e.push("previous_stream_seq", h.stream_seq.to_string());
        }
    }
    e.to_line().into_bytes()
}

/// Runs one ownership epoch of `replica`: writes the epoch record, then consumes the
/// shard's stream until the lease is lost or `stop` is set.
pub(crate) async fn own(
    replica: Arc<ShardReplica>,
    js: jetstream::Context,
    mut own: Ownership,
) -> Result<(), ClusterError> {
    let shard = replica.shard;
    let audit_err = |source| ClusterError::Audit { shard, source };
    let line = epoch_line(shard, &own, replica.last_stream_seq());
    replica
        .writer
        .append(
            format!("epoch:r{}", own.revision),
            format!("spoor-cluster/{}", own.node),
            vec![line],
        )
        .await
        .map_err(audit_err)?;
    tracing::info!(shard, revision = own.revision, "Shard epoch started.");
    let mut stream = js
        .get_stream(stream_name(shard))
        .await
        .map_err(|e| ClusterError::nats("opening a shard stream", e))?;
    let durable = format!("spoor-{}", own.node);
    let start = replica.last_stream_seq() + 1;
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: 20_000,
        ..Default::default()
    };
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(&durable, config.clone())
        .await
        .map_err(|e| ClusterError::nats("creating the shard consumer", e))?;
    let floor = consumer
        .info()
        .await
        .map_err(|e| ClusterError::nats("reading the shard consumer", e))?
        .ack_floor
        .stream_sequence;
    if floor >= start {
        // The consumer is ahead of this copy (its data directory was replaced): start it
        // again where the copy ends, or those messages would never come back.
        tracing::warn!(
            shard,
            floor,
            start,
            "Consumer ahead of the shard copy; recreating it."
        );
        stream
            .delete_consumer(&durable)
            .await
            .map_err(|e| ClusterError::nats("recreating the shard consumer", e))?;
        consumer = stream
            .create_consumer(config.clone())
            .await
            .map_err(|e| ClusterError::nats("recreating the shard consumer", e))?;
    }
    let fenced = |fence: &watch::Receiver<Instant>| Instant::now() >= *fence.borrow();
    let mut idle_since: Option<Instant> = None;
    while !*own.stop.borrow() && !fenced(&own.fence) {
        // What is there now, at once; when nothing is, wait for the first message and
        // then take what came with it (low latency without polling).
        let mut messages = match pull(&consumer, FETCH_MESSAGES, None, &mut own.stop).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(shard, error = %e, "Pulling from the shard stream failed; retrying.");
                wait_or_stop(&mut own.stop, Duration::from_millis(200)).await;
                continue;
            }
        };
        if messages.is_empty() {
            messages = pull(&consumer, 1, Some(FETCH_WAIT), &mut own.stop)
                .await
                .unwrap_or_default();
            if !messages.is_empty() {
                let more = pull(&consumer, FETCH_MESSAGES - 1, None, &mut own.stop).await;
                messages.extend(more.unwrap_or_default());
            }
        }
        if messages.is_empty() {
            // A consumer that yields nothing while the stream holds messages past this
            // copy is stuck (seen after the stream's leader was killed): start it again
            // where the copy ends.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STUCK_AFTER {
                idle_since = None;
                let behind = match stream.info().await {
                    Ok(info) => info.state.last_sequence > replica.last_stream_seq(),
                    Err(e) => {
                        tracing::debug!(shard, error = %e, "Reading the shard stream's state failed.");
                        false
                    }
                };
                if behind {
                    let mut fresh = config.clone();
                    fresh.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: replica.last_stream_seq() + 1,
                    };
                    tracing::warn!(
                        shard,
                        "Shard consumer idle while the stream has more; recreating it."
                    );
                    let _ = stream.delete_consumer(&durable).await;
                    match stream.create_consumer(fresh).await {
                        Ok(c) => consumer = c,
                        Err(e) => {
                            tracing::warn!(shard, error = %e, "Recreating the shard consumer failed; retrying.")
                        }
                    }
                }
            }
            continue;
        }
        idle_since = None;
        if fenced(&own.fence) {
            // The lease may already be someone else's: hand everything back unappended.
            for m in &messages {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            break;
        }
        let mut last = replica.last_stream_seq();
        let mut pending = Vec::new();
        let mut to_ack = Vec::new();
        let mut handed_back = Vec::new();
        for m in messages {
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "A message without JetStream metadata; handing it back.");
                    handed_back.push(m);
                    continue;
                }
            };
            if seq <= last {
                to_ack.push(m);
                continue;
            }
            if seq != last + 1 || !handed_back.is_empty() {
                // A hole (an earlier message is being redelivered): keep order.
                handed_back.push(m);
                continue;
            }
            let batch = match payload::decode(&m.payload, m.headers.as_ref()) {
                Ok(b) => b,
                Err(e) => {
                    // Not spoor's: keep the position and say so; it is not appended.
                    tracing::error!(shard, seq, error = %e, "Skipping a message spoor cannot read.");
                    last = seq;
                    to_ack.push(m);
                    continue;
                }
            };
            let key = format!("js:{seq}:r{}:{}", own.revision, batch.key);
            let answer = replica
                .writer
                .submit(key, batch.agent, batch.lines)
                .await
                .map_err(audit_err)?;
            pending.push(answer);
            last = seq;
            to_ack.push(m);
        }
        for answer in pending {
            if let Err(e) = answer.await {
                for m in to_ack.iter().chain(&handed_back) {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                return Err(audit_err(e));
            }
        }
        // Durable (fsynced): now acknowledge.
        replica.last_stream_seq.store(last, Ordering::Release);
        for m in &to_ack {
            if let Err(e) = m.ack().await {
                tracing::debug!(shard, error = %e, "An ack was not sent; the message will be redelivered and skipped.");
            }
        }
        for m in &handed_back {
            let _ = m
                .ack_with(AckKind::Nak(Some(Duration::from_millis(100))))
                .await;
        }
    }
    tracing::info!(shard, revision = own.revision, "Shard epoch ended.");
    Ok(())
}

/// One pull request: up to `max` messages, returning at once with what is available
/// (`wait` = `None`) or waiting up to `wait` for them.
async fn pull(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    max: usize,
    wait: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Vec<jetstream::Message>, ClusterError> {
    // A pull whose request or answer was lost (the stream's leader died meanwhile) would
    // otherwise wait forever: give up on it after its own wait plus this much.
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default() + PULL_GRACE;
    let request = async {
        match wait {
            None => consumer.fetch().max_messages(max).messages().await,
            Some(d) => {
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(d)
                    .messages()
                    .await
            }
        }
    };
    let mut batch = match tokio::time::timeout_at(deadline, request).await {
        Ok(b) => b.map_err(|e| ClusterError::nats("pulling from a shard stream", e))?,
        Err(_) => return Ok(Vec::new()),
    };
    let mut messages = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            m = batch.next() => match m {
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Pull ended early.");
                    break;
                }
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    Ok(messages)
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_seqs_are_read_back_from_batch_keys() {
        assert_eq!(stream_seq_of("js:42:r7:agent-batch-1"), Some(42));
        assert_eq!(stream_seq_of("js:42:r7:"), Some(42));
        assert_eq!(stream_seq_of("epoch:r7"), None);
        assert_eq!(stream_seq_of("plain-key"), None);
    }
}
