//! Groups enriched lines into batches and writes each batch to the disk buffer as one
//! record; owns the buffer's write side (append, group-commit fsync) and the persisting of
//! file read positions.
//!
//! A batch is its lines, each ending in `\n`. It is cut at `max_events` lines, at
//! `max_bytes` (a line that would overflow starts the next batch), or `max_wait` after its
//! first line, and written to the buffer zstd-compressed ([`crate::batch_record`]). The
//! record ID the buffer gives it makes the batch's idempotency key
//! `{agent_id}-{record_id}`, the same across retries and restarts.
//!
//! **Lanes.** Lines are batched per lane, [`LANES`] of them, chosen by a hash of the
//! line's `source` ([`lane_of`]), so every batch holds lines of one lane only and the
//! lines of one source are in one lane, in the order they were read. The forwarder sends
//! at most one batch of a lane at a time, in record order ([`crate::forward`]): several
//! batches are in flight (of different lanes) while the order within a source holds.
//!
//! Invariants:
//! - A batch with file lines is written with a header of the file positions it reached
//!   ([`encode_header`]), so lines and positions are durable together; see
//!   [`crate::inputs::positions`] for how a restart recovers them.
//! - The `positions.json` checkpoint is written only once the records it covers are
//!   fsynced (`record_id <= durable_id`); positions of a dropped batch wait for the record
//!   appended before it. Until the checkpoint covers a record with positions, the buffer
//!   keeps its segment ([`DiskBuffer::keep_from`](crate::buffer::DiskBuffer::keep_from)).
//! - When the buffer is full the [`FullPolicy`] decides: `block` stops reading from the
//!   channel (so inputs stop) and retries every 100 ms, `drop_newest` drops the batch,
//!   `drop_oldest` drops the oldest unacknowledged segment and retries. A full disk is
//!   handled like `block`. Drops are counted (`dropped_events` for `drop_newest`,
//!   `dropped_batches` for `drop_oldest`) and, once the pressure is over (an append
//!   meets no full buffer and leaves it under half full; tried every second even without
//!   new lines), reported in one `level=warn` event.
//! - A configuration reload may change `[batch]` ([`Batcher::tuning`]); the new limits
//!   apply from the next line on.
//! - At shutdown the batcher drains the channel until every input has hung up, writes the
//!   last batch and fsyncs; while shutting down, a batch that cannot be written is dropped
//!   (counted) instead of blocking the exit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Notify, mpsc, watch};

use crate::batch_record;
use crate::buffer::BufferError;
use crate::buffer_handle::BufferHandle;
use crate::config::{FullPolicy, duration};
use crate::enrich::Enricher;
use crate::error::AgentError;
use crate::inputs::InputLine;
use crate::inputs::positions::{FileKey, FilePosition, Positions, encode_header};
use crate::metrics::{Metrics, inc};

/// When a batch is cut.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most lines in one batch. Default 1000.
    pub max_events: usize,
    /// Most bytes in one batch (uncompressed). Default 1048576 (1 MiB).
    pub max_bytes: usize,
    /// Longest time a line waits for its batch to fill. Default `200ms`.
    #[serde(with = "duration")]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 1000,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(200),
        }
    }
}

/// The `source` of the agent's own events.
const AGENT_SOURCE: &str = "agent";

/// How many lanes lines are batched in (see the module docs). Fixed, so that records
/// written before a restart map to the same lanes after it.
pub(crate) const LANES: usize = 16;

/// The lane of the lines of `source` (`tcp`, `unix`, `syslog`, a file path, ...): FNV-1a,
/// written here because it is five lines and must stay the same across versions (a
/// library's hasher may change its output between releases).
pub(crate) fn lane_of(source: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % LANES as u64) as usize
}

/// The batching stage.
pub(crate) struct Batcher {
    pub(crate) rx: mpsc::Receiver<InputLine>,
    pub(crate) buffer: BufferHandle,
    pub(crate) config: BatchConfig,
    /// New `[batch]` settings from a configuration reload.
    pub(crate) tuning: watch::Receiver<BatchConfig>,
    pub(crate) policy: FullPolicy,
    pub(crate) positions: Arc<Mutex<Positions>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) enricher: Arc<Enricher>,
    /// Woken when more records became durable.
    pub(crate) forward_wake: Arc<Notify>,
    /// Turns true when the agent shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) state: BatchState,
}

/// The batch being filled in one lane.
#[derive(Debug, Default)]
struct OpenBatch {
    lines: Vec<u8>,
    events: usize,
    started: Option<Instant>,
    positions: HashMap<FileKey, FilePosition>,
}

/// What the batcher keeps between lines.
#[derive(Debug)]
pub(crate) struct BatchState {
    /// One open batch per lane.
    open: Vec<OpenBatch>,
    /// Positions waiting for their record to become durable: (record ID, positions).
    pending: VecDeque<(u64, Vec<FilePosition>)>,
    last_id: u64,
    durable_id: u64,
    sync_deadline: Option<Instant>,
    dropped_unreported: u64,
    /// The last append met a full buffer or left it over half full (the pressure is not
    /// over).
    last_append_full: bool,
    /// Batches dropped by `drop_oldest` and not yet reported.
    dropped_batches_unreported: u64,
    /// The keep mark last given to the buffer.
    kept_from: Option<u64>,
}

impl Default for BatchState {
    fn default() -> Self {
        BatchState {
            open: (0..LANES).map(|_| OpenBatch::default()).collect(),
            pending: VecDeque::new(),
            last_id: 0,
            durable_id: 0,
            sync_deadline: None,
            dropped_unreported: 0,
            last_append_full: false,
            dropped_batches_unreported: 0,
            kept_from: None,
        }
    }
}

impl BatchState {
    /// When the oldest open batch is due to be cut, if any holds lines.
    fn next_cut(&self, max_wait: Duration) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|b| b.started)
            .min()
            .map(|t| t + max_wait)
    }

    fn holds_lines(&self) -> bool {
        self.open.iter().any(|b| b.events > 0)
    }
}

impl Batcher {
    /// Runs until every input hung up; then writes and fsyncs what is left.
    pub(crate) async fn run(mut self) -> Result<(), AgentError> {
        let durable = self.buffer.run(|b| b.durable_id()).await;
        self.state.durable_id = durable;
        self.state.last_id = durable;
        loop {
            if self.tuning.has_changed().unwrap_or(false) {
                self.config = self.tuning.borrow_and_update().clone();
            }
            let now = Instant::now();
            let batch_deadline = self.state.next_cut(self.config.max_wait);
            let sync_deadline = self.state.sync_deadline;
            tokio::select! {
                line = self.rx.recv() => match line {
                    Some(line) => self.add(line).await?,
                    None => break,
                },
                _ = tokio::time::sleep_until(batch_deadline.unwrap_or(now).into()), if batch_deadline.is_some() => {
                    self.flush_due().await?;
                }
                _ = tokio::time::sleep_until(sync_deadline.unwrap_or(now).into()), if sync_deadline.is_some() => {
                    self.sync(false).await?;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)), if self.state.dropped_unreported > 0 || self.state.dropped_batches_unreported > 0 => {
                    self.try_report_drops().await;
                }
            }
        }
        for lane in 0..LANES {
            self.flush(lane).await?;
        }
        self.sync(true).await?;
        Ok(())
    }

    /// Cuts every batch that has waited `max_wait`.
    async fn flush_due(&mut self) -> Result<(), AgentError> {
        let now = Instant::now();
        for lane in 0..LANES {
            let started = self.state.open[lane].started;
            if started.is_some_and(|t| t + self.config.max_wait <= now) {
                self.flush(lane).await?;
            }
        }
        Ok(())
    }

    async fn add(&mut self, line: InputLine) -> Result<(), AgentError> {
        if line.line.is_empty() {
            // Dropped by a `drop_event` redaction rule: nothing to write; its read
            // position travels with the next batch.
            if let Some(p) = line.position {
                self.state.open[line.lane].positions.insert(p.key, p);
            }
            return Ok(());
        }
        let lane = line.lane % LANES;
        let b = &self.state.open[lane];
        if b.events > 0 && b.lines.len() + line.line.len() + 1 > self.config.max_bytes {
            self.flush(lane).await?;
        }
        let b = &mut self.state.open[lane];
        b.lines.extend_from_slice(line.line.as_bytes());
        b.lines.push(b'\n');
        b.events += 1;
        b.started.get_or_insert_with(Instant::now);
        if let Some(p) = line.position {
            b.positions.insert(p.key, p);
        }
        if b.events >= self.config.max_events || b.lines.len() >= self.config.max_bytes {
            self.flush(lane).await?;
        }
        Ok(())
    }

    /// Writes the open batch of `lane` (if it holds lines) to the buffer.
    async fn flush(&mut self, lane: usize) -> Result<(), AgentError> {
        let b = &mut self.state.open[lane];
        b.started = None;
        if b.events == 0 {
            return Ok(());
        }
        let lines = std::mem::take(&mut b.lines);
        let events = std::mem::take(&mut b.events);
        let mut positions: Vec<FilePosition> = b.positions.drain().map(|(_, p)| p).collect();
        positions.sort_by_key(|p| (p.key.dev, p.key.ino));
        let header = if positions.is_empty() {
            Vec::new()
        } else {
            encode_header(&positions)
        };
        // Compressed before the buffer seals it (see `batch_record`), off the runtime's
        // threads.
        let encoded = tokio::task::spawn_blocking(move || {
            let encoded = batch_record::encode(header.clone(), lane, events, &lines);
            encoded.map_err(|e| (e, header, lines))
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))?;
        let data = match encoded {
            Ok(data) => data,
            Err((e, mut header, lines)) => {
                tracing::warn!(error = %e, "Compressing a batch failed; buffering it plain.");
                header.extend_from_slice(&lines);
                header
            }
        };
        let appended = self.append(data, events as u64).await;
        if let Some(id) = appended {
            self.state.last_id = id;
            inc(&self.metrics.batches_appended, 1);
            let unreported =
                self.state.dropped_unreported > 0 || self.state.dropped_batches_unreported > 0;
            if unreported && !self.state.last_append_full {
                self.report_drops();
            }
        }
        // A batch lost to shutdown keeps its file positions unsaved, so a restart reads
        // those lines again; a batch dropped by policy moves them on.
        let lost_to_shutdown = appended.is_none() && *self.shutdown.borrow();
        if !positions.is_empty() && !lost_to_shutdown {
            self.state
                .pending
                .push_back((self.state.last_id, positions));
            self.keep_pending().await;
        }
        self.commit_positions().await
    }

    /// Tells the buffer to keep segments from the oldest record whose positions are not
    /// in the checkpoint yet (or none).
    async fn keep_pending(&mut self) {
        let from = self.state.pending.front().map(|(id, _)| *id);
        if from != self.state.kept_from {
            self.state.kept_from = from;
            self.buffer.run(move |b| b.keep_from(from)).await;
        }
    }

    /// Appends with the full-buffer policy. `None` when the batch was dropped.
    async fn append(&mut self, mut data: Vec<u8>, events: u64) -> Option<u64> {
        let mut warned = false;
        self.state.last_append_full = false;
        loop {
            let (back, result, durable, deadline) = self
                .buffer
                .run(move |b| {
                    let r = b.append(&data);
                    let half_full = b.used_bytes() > b.max_bytes() / 2;
                    (
                        data,
                        r.map(|id| (id, half_full)),
                        b.durable_id(),
                        b.sync_deadline(),
                    )
                })
                .await;
            data = back;
            self.after_write(durable, deadline);
            let stopping = *self.shutdown.borrow();
            let wait = match result {
                Ok((id, half_full)) => {
                    // The pressure is over once the buffer is back under half full.
                    self.state.last_append_full |= half_full;
                    return Some(id);
                }
                Err(BufferError::Full { used, max, .. }) => {
                    inc(&self.metrics.buffer_full, 1);
                    self.state.last_append_full = true;
                    match self.policy {
                        FullPolicy::DropNewest => return self.drop_batch(events, "buffer full"),
                        FullPolicy::DropOldest => {
                            let before = self.buffer.run(|b| b.stats().records_dropped).await;
                            match self.buffer.run(|b| b.drop_oldest_unacked()).await {
                                Ok(Some(_)) => {
                                    let after =
                                        self.buffer.run(|b| b.stats().records_dropped).await;
                                    self.state.dropped_batches_unreported += after - before;
                                    continue;
                                }
                                Ok(None) => {
                                    return self
                                        .drop_batch(events, "buffer full and nothing to drop");
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "Could not drop the oldest batches.");
                                    return self.drop_batch(events, "buffer full");
                                }
                            }
                        }
                        FullPolicy::Block => {
                            if !warned {
                                tracing::warn!(
                                    used,
                                    max,
                                    "Disk buffer full; inputs wait until the collector catches up."
                                );
                                warned = true;
                            }
                            Duration::from_millis(100)
                        }
                    }
                }
                Err(BufferError::RecordTooLarge { len, max }) => {
                    tracing::error!(len, max, "Batch larger than a buffer segment.");
                    return self.drop_batch(events, "batch too large");
                }
                Err(e) => {
                    if matches!(e, BufferError::DiskFull { .. }) {
                        inc(&self.metrics.disk_full, 1);
                    } else {
                        inc(&self.metrics.buffer_errors, 1);
                    }
                    if !warned {
                        tracing::error!(error = %e, "Cannot write to the disk buffer; retrying.");
                        warned = true;
                    }
                    Duration::from_secs(1)
                }
            };
            if stopping {
                return self.drop_batch(events, "shutting down while the buffer cannot take it");
            }
            // Make what was written durable so the forwarder can free room meanwhile.
            if let Err(e) = self.sync(true).await {
                tracing::warn!(error = %e, "Sync while waiting for buffer room failed.");
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn drop_batch(&mut self, events: u64, reason: &'static str) -> Option<u64> {
        inc(&self.metrics.events_dropped, events);
        self.state.dropped_unreported += events;
        tracing::warn!(events, reason, "Dropped a batch.");
        None
    }

    /// Adds one event saying how many events were dropped to the (new) current batch.
    fn report_drops(&mut self) {
        let raw = self.drop_report();
        self.state.dropped_unreported = 0;
        self.state.dropped_batches_unreported = 0;
        let (line, _) = self.enricher.enrich(raw.as_bytes(), AGENT_SOURCE);
        if line.is_empty() {
            return;
        }
        let b = &mut self.state.open[lane_of(AGENT_SOURCE)];
        b.lines.extend_from_slice(line.as_bytes());
        b.lines.push(b'\n');
        b.events += 1;
        b.started.get_or_insert_with(Instant::now);
    }

    /// The raw report line of the drops not yet reported.
    fn drop_report(&self) -> String {
        format!(
            "level=warn msg=\"spoor agent dropped events\" dropped_events={} dropped_batches={} kind=log",
            self.state.dropped_unreported, self.state.dropped_batches_unreported
        )
    }

    /// With nothing else to write, appends the drop report on its own once the buffer has
    /// room again (it is not itself dropped when there is none: it waits).
    async fn try_report_drops(&mut self) {
        if self.state.holds_lines() {
            return;
        }
        let raw = self.drop_report();
        let (line, _) = self.enricher.enrich(raw.as_bytes(), AGENT_SOURCE);
        let data = format!("{line}\n").into_bytes();
        let (result, durable, deadline) = self
            .buffer
            .run(move |b| {
                let r = if b.used_bytes() > b.max_bytes() / 2 {
                    Err(BufferError::Config("still over half full".into()))
                } else {
                    b.append(&data)
                };
                (r, b.durable_id(), b.sync_deadline())
            })
            .await;
        self.after_write(durable, deadline);
        if let Ok(id) = result {
            self.state.last_id = id;
            self.state.dropped_unreported = 0;
            self.state.dropped_batches_unreported = 0;
            inc(&self.metrics.batches_appended, 1);
            tracing::info!("Reported dropped events: the buffer has room again.");
        }
    }

    fn after_write(&mut self, durable: u64, deadline: Option<Instant>) {
        self.state.sync_deadline = deadline;
        if durable > self.state.durable_id {
            self.state.durable_id = durable;
            self.forward_wake.notify_one();
        }
    }

    /// Fsyncs when due (or now with `force`), then persists positions that became safe.
    async fn sync(&mut self, force: bool) -> Result<(), AgentError> {
        let (result, durable, deadline) = self
            .buffer
            .run(move |b| {
                let r = if force {
                    b.flush_and_sync()
                } else {
                    b.maybe_sync(Instant::now()).map(drop)
                };
                (r, b.durable_id(), b.sync_deadline())
            })
            .await;
        if let Err(e) = result {
            inc(&self.metrics.buffer_errors, 1);
            tracing::error!(error = %e, "Fsync of the disk buffer failed; will retry.");
        }
        // Retry a failed sync in a while rather than in a busy loop.
        let deadline = deadline.map(|d| d.max(Instant::now() + Duration::from_millis(10)));
        self.after_write(durable, deadline);
        self.commit_positions().await
    }

    async fn commit_positions(&mut self) -> Result<(), AgentError> {
        let mut ready = Vec::new();
        while let Some((id, _)) = self.state.pending.front() {
            if *id > self.state.durable_id {
                break;
            }
            if let Some((id, p)) = self.state.pending.pop_front() {
                ready.extend(p.into_iter().map(|p| FilePosition { record: id, ..p }));
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let positions = self.positions.clone();
        let through = self.state.durable_id;
        let result = tokio::task::spawn_blocking(move || {
            positions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .commit(ready, through)
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))?;
        match result {
            Ok(()) => self.keep_pending().await,
            // Not fatal: the records keep their positions (their segments stay) and the
            // next checkpoint covers them.
            Err(e) => tracing::warn!(error = %e, "Could not persist file read positions."),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_stable_and_spread() {
        // Records written before an upgrade must map to the same lanes after it.
        assert_eq!(lane_of("tcp"), lane_of("tcp"));
        let fixed: Vec<usize> = ["tcp", "unix", "syslog", "agent", "spill"]
            .iter()
            .map(|s| lane_of(s))
            .collect();
        assert_eq!(fixed, vec![0, 3, 12, 6, 13]);
        let files: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane_of(&format!("/var/log/app-{i}.log")))
            .collect();
        assert_eq!(files.len(), LANES, "200 files should use every lane");
    }
}
