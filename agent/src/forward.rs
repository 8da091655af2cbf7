//! Sends buffered batches to the collector and acknowledges them in the buffer.
//!
//! Lifecycle of one record: [`DiskBuffer::next_unsent`](crate::buffer::DiskBuffer::next_unsent)
//! hands it out (only once it is fsynced) → its file positions header is stripped
//! ([`crate::inputs::positions`]) → its zstd body is sent as it is ([`crate::batch_record`];
//! recompressed only for another `compression`) → `POST {collector}/api/v1/ingest`
//! with `Idempotency-Key: {agent_id}-{record_id}`, `X-Spoor-Agent`, `Content-Encoding` and,
//! when configured, `Authorization: Bearer` → then:
//! - `2xx` (including `{"duplicate": true}`): acked in the buffer, which deletes it once its
//!   segment is all acked. Nothing is deleted before this answer. The ack reaches the
//!   ledger on disk with the next group commit, not with an fsync of its own: after a
//!   crash an ack that was not yet persisted means one resend, under the same key, which
//!   the collector answers as a duplicate.
//! - network error, `408` or `5xx`: retried without limit, with full-jitter backoff
//!   (`random(0, min(cap, base * 2^attempt))`); `429` and `503` wait for `Retry-After`
//!   (seconds) when given.
//! - any other `4xx`: the batch and the answer go to `DATA_DIR/deadletter/<key>.txt`, then
//!   the record is acked and `deadlettered_batches_total` counts it: never silently dropped.
//!
//! Up to `max_in_flight` records are sent at once, but never two of one lane: records of
//! a lane are sent one after the other, in the order they were appended, so the lines of
//! one source reach the collector in the order they were read, retries included, while
//! other sources' batches go alongside. At shutdown no new record is taken, retries stop, and requests
//! in flight get `shutdown_grace` to finish; whatever is not acked is sent again after the
//! restart under the same key, and the collector answers it as a duplicate.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Notify, watch};

use spoor_sdk::event::keys;
use spoor_sdk::logfmt::{ReadOptions, read_line};

use crate::batch::{LANES, lane_of};
use crate::batch_record;
use crate::buffer_handle::BufferHandle;
use crate::config::{Secret, duration};
use crate::identity::{random_u64, write_atomically};
use crate::metrics::{Metrics, inc};

/// Name of the dead-letter folder inside the data directory.
pub const DEADLETTER_DIR: &str = "deadletter";

/// How batches are sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Most batches sent at once. Default 4.
    pub max_in_flight: usize,
    /// Body compression: `zstd`, `gzip` or `none`. Default `zstd`.
    pub compression: Compression,
    /// File holding the bearer token (`SPOOR_TOKEN` wins). Default none: no token sent.
    pub token_file: Option<PathBuf>,
    /// Timeout of one ingest request. Default `30s`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// First retry waits up to this long. Default `100ms`.
    #[serde(with = "duration")]
    pub backoff_base: Duration,
    /// Longest wait between retries. Default `30s`.
    #[serde(with = "duration")]
    pub backoff_cap: Duration,
    /// How long requests in flight may finish at shutdown. Default `2s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// PEM file of the CA certificates to trust for an `https://` collector, instead of
    /// the system's trust store. Default none (system roots).
    pub ca_file: Option<PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            max_in_flight: 4,
            compression: Compression::Zstd,
            token_file: None,
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            ca_file: None,
        }
    }
}

/// Compression of request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// zstd, level 3 (`Content-Encoding: zstd`).
    Zstd,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
    /// Uncompressed.
    None,
}

impl Compression {
    /// The body and its `Content-Encoding` (`None` for identity).
    fn compress(self, data: &[u8]) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
        match self {
            Compression::Zstd => Ok((batch_record::compress(data)?, Some("zstd"))),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(data)?;
                Ok((enc.finish()?, Some("gzip")))
            }
            Compression::None => Ok((data.to_vec(), None)),
        }
    }
}

/// Full-jitter backoff: a random wait in `0..=min(cap, base * 2^attempt)`.
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random_u64() % nanos.saturating_add(1))
}

/// An error with its sources (`error sending request: ...: invalid peer certificate`), so
/// that TLS and connection failures say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The lane of a buffer record: in its header, or for older records that of the `source`
/// of its first line (every line of a record is of one lane, see [`crate::batch`]).
fn lane_of_record(content: &[u8]) -> usize {
    let lines = match batch_record::decode(content) {
        batch_record::Batch::Zstd { lane, .. } => return lane % LANES,
        batch_record::Batch::Plain(lines) => lines,
        batch_record::Batch::Unreadable => return 0,
    };
    let first = lines.split(|&b| b == b'\n').next().unwrap_or_default();
    let options = ReadOptions {
        max_line_bytes: usize::MAX,
    };
    let (event, _) = read_line(first, &options);
    event.get(keys::SOURCE).map_or(0, lane_of)
}

/// Reads `Retry-After` (seconds or an HTTP date).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    spoor_sdk::retry::parse_retry_after(text, time::OffsetDateTime::now_utc())
}

/// The forwarding stage.
#[derive(Debug)]
pub(crate) struct Forwarder {
    pub(crate) buffer: BufferHandle,
    pub(crate) client: reqwest::Client,
    /// `{collector}/api/v1/ingest`.
    pub(crate) url: String,
    pub(crate) agent_id: String,
    pub(crate) token: Option<Secret>,
    pub(crate) config: ForwardConfig,
    pub(crate) metrics: Arc<Metrics>,
    /// Woken when new records became durable.
    pub(crate) wake: Arc<Notify>,
    pub(crate) deadletter_dir: PathBuf,
}

enum Outcome {
    Acked {
        duplicate: bool,
    },
    Deadletter {
        status: u16,
        answer: String,
    },
    Retry {
        wait: Option<Duration>,
        reason: String,
    },
}

impl Forwarder {
    /// Runs until `shutdown` turns true, then lets requests in flight finish briefly.
    ///
    /// Records are taken from the buffer in order, a few ahead of what is in flight; one
    /// is started when no earlier record of its lane ([`crate::batch`]) is in flight or
    /// waiting, and at most `max_in_flight` are in flight.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let max_in_flight = self.config.max_in_flight.max(1);
        let look_ahead = max_in_flight * 2;
        let mut waiting: VecDeque<(u64, Vec<u8>, usize)> = VecDeque::new();
        let mut busy = [false; LANES];
        let mut lane_of_task: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut buffer_empty = false;
            while waiting.len() < look_ahead {
                match self.buffer.run(|b| b.next_unsent()).await {
                    Ok(Some((id, batch))) => {
                        let lane = lane_of_record(&batch);
                        waiting.push_back((id, batch, lane));
                    }
                    Ok(None) => {
                        buffer_empty = true;
                        break;
                    }
                    Err(e) => {
                        inc(&self.metrics.buffer_errors, 1);
                        tracing::error!(error = %e, "Cannot read the disk buffer.");
                        buffer_empty = true;
                        break;
                    }
                }
            }
            // Oldest first; a lane's later records wait behind its earlier ones.
            let mut held = busy;
            let mut i = 0;
            while i < waiting.len() && tasks.len() < max_in_flight {
                let lane = waiting[i].2;
                if held[lane] {
                    i += 1;
                    continue;
                }
                let Some((id, batch, lane)) = waiting.remove(i) else {
                    break;
                };
                held[lane] = true;
                busy[lane] = true;
                let me = self.clone();
                let stop = shutdown.clone();
                let handle = tasks.spawn(async move { me.deliver(id, batch, stop).await });
                lane_of_task.insert(handle.id(), lane);
            }
            if buffer_empty {
                // Nothing more to take now: persist deferred acks that are due.
                if let Err(e) = self.buffer.run(|b| b.maybe_sync(Instant::now())).await {
                    inc(&self.metrics.buffer_errors, 1);
                    tracing::warn!(error = %e, "Could not persist acknowledgements; will retry.");
                }
            }
            tokio::select! {
                done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match done {
                        Some(Ok((id, ()))) => Some(id),
                        Some(Err(e)) => Some(e.id()),
                        None => None,
                    };
                    if let Some(lane) = id.and_then(|id| lane_of_task.remove(&id)) {
                        busy[lane] = false;
                    }
                }
                _ = self.wake.notified(), if buffer_empty => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                in_flight = tasks.len(),
                "Stopped requests still in flight; they are resent after restart."
            );
            tasks.abort_all();
        }
    }

    /// Sends one record until it is acked or dead-lettered, or the agent stops.
    async fn deliver(&self, id: u64, batch: Vec<u8>, mut shutdown: watch::Receiver<bool>) {
        let key = format!("{}-{id}", self.agent_id);
        let compression = self.config.compression;
        // The file positions header stays on this host. A record already holds its lines
        // zstd-compressed (see `batch_record`): sent as they are, else recompressed.
        let record = Arc::new(batch);
        let input = record.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let batch = batch_record::decode(&input);
            match batch {
                batch_record::Batch::Zstd {
                    events,
                    bytes,
                    body,
                    ..
                } if compression == Compression::Zstd => {
                    Ok((body.to_vec(), Some("zstd"), events, bytes as u64))
                }
                _ => {
                    let lines = batch.lines()?;
                    let events = lines.iter().filter(|&&b| b == b'\n').count() as u64;
                    let (body, encoding) = compression.compress(&lines)?;
                    Ok::<_, std::io::Error>((body, encoding, events, lines.len() as u64))
                }
            }
        })
        .await;
        let (body, encoding, events, plain_bytes) = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                // Cannot happen to a record this agent wrote (it is authenticated); keep it
                // and say so rather than send something unreadable.
                inc(&self.metrics.buffer_errors, 1);
                tracing::error!(key, error = %e, "Cannot read a buffered batch; it stays in the buffer.");
                return;
            }
            Err(e) => {
                tracing::error!(key, error = %e, "Preparing a batch failed; it stays in the buffer.");
                return;
            }
        };
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            match self.send(&key, body.clone(), encoding).await {
                Outcome::Acked { duplicate } => {
                    let m = &self.metrics;
                    inc(
                        &m.forward_latency_micros_sum,
                        started.elapsed().as_micros() as u64,
                    );
                    inc(&m.forward_latency_count, 1);
                    inc(&m.batches_forwarded, 1);
                    inc(&m.events_forwarded, events);
                    inc(&m.bytes_forwarded, plain_bytes);
                    if duplicate {
                        inc(&m.duplicates, 1);
                    }
                    tracing::debug!(key, events, duplicate, "Batch acknowledged.");
                    self.ack(id).await;
                    return;
                }
                Outcome::Deadletter { status, answer } => {
                    let lines = batch_record::decode(&record).lines().unwrap_or_default();
                    if self.deadletter(&key, status, &answer, &lines).await {
                        self.ack(id).await;
                        return;
                    }
                    // Not written: keep the record and try the whole thing again later.
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.backoff_cap) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
                Outcome::Retry { wait, reason } => {
                    inc(&self.metrics.retries, 1);
                    let wait = wait.unwrap_or_else(|| {
                        backoff(self.config.backoff_base, self.config.backoff_cap, attempt)
                    });
                    if attempt == 0 || attempt.is_multiple_of(10) {
                        tracing::warn!(
                            key,
                            attempt,
                            wait_ms = wait.as_millis() as u64,
                            reason,
                            "Sending a batch failed; retrying."
                        );
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
    }

    async fn send(&self, key: &str, body: Vec<u8>, encoding: Option<&'static str>) -> Outcome {
        let mut req = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", key)
            .header("X-Spoor-Agent", &self.agent_id)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if let Some(enc) = encoding {
            req = req.header(reqwest::header::CONTENT_ENCODING, enc);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    wait: None,
                    reason: error_chain(&e),
                };
            }
        };
        let status = resp.status();
        let wait_hint = retry_after(resp.headers());
        let answer = resp.text().await.unwrap_or_default();
        let code = status.as_u16();
        if status.is_success() {
            let duplicate = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v.get("duplicate").and_then(|d| d.as_bool()))
                .unwrap_or(false);
            Outcome::Acked { duplicate }
        } else if code == 429 || code == 503 {
            Outcome::Retry {
                wait: wait_hint,
                reason: format!("status {code}"),
            }
        } else if status.is_client_error() && code != 408 {
            Outcome::Deadletter {
                status: code,
                answer,
            }
        } else {
            Outcome::Retry {
                wait: None,
                reason: format!("status {code}"),
            }
        }
    }

    async fn ack(&self, id: u64) {
        // Deferred: the ledger is written with the next group commit, not per batch (an
        // ack lost to a crash is a resend the collector answers as a duplicate).
        let acked = self
            .buffer
            .run(move |b| {
                b.ack_deferred([id])?;
                b.maybe_sync(Instant::now())
            })
            .await;
        if let Err(e) = acked {
            inc(&self.metrics.buffer_errors, 1);
            tracing::error!(record_id = id, error = %e, "Could not record an ack; the batch will be resent after restart.");
        }
    }

    /// Writes the dead-letter file; `false` when it could not be written.
    async fn deadletter(&self, key: &str, status: u16, answer: &str, batch: &[u8]) -> bool {
        let path = self.deadletter_dir.join(format!("{key}.txt"));
        let mut content = format!(
            "# idempotency_key: {key}\n# status: {status}\n# answer: {}\n",
            answer.replace('\n', "\n# ")
        )
        .into_bytes();
        content.extend_from_slice(batch);
        let dir = self.deadletter_dir.clone();
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_atomically(&target, &content)
        })
        .await;
        match written {
            Ok(Ok(())) => {
                inc(&self.metrics.deadlettered_batches, 1);
                tracing::error!(key, status, path = %path.display(), "Collector refused a batch; moved it to the dead-letter folder.");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(key, status, error = %e, path = %path.display(), "Collector refused a batch and the dead-letter file could not be written; keeping the batch.");
                false
            }
            Err(e) => {
                tracing::error!(key, status, error = %e, "Dead-letter task failed; keeping the batch.");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let ceiling = base.saturating_mul(1 << attempt.min(20)).min(cap);
            assert!(backoff(base, cap, attempt) <= ceiling);
        }
    }

    #[test]
    fn compression_round_trips() {
        let data = b"a=1\nb=2\n".repeat(100);
        let (z, enc) = Compression::Zstd.compress(&data).expect("zstd");
        assert_eq!(enc, Some("zstd"));
        assert_eq!(zstd::decode_all(&z[..]).expect("decode"), data);
        let (g, enc) = Compression::Gzip.compress(&data).expect("gzip");
        assert_eq!(enc, Some("gzip"));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&g[..]), &mut out)
            .expect("gunzip");
        assert_eq!(out, data);
    }
}
