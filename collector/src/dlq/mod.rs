//! The dead-letter store: failed work that people can search, inspect and replay.
//!
//! # How entries get here
//! A follower thread (`spoor-dlq`) reads the audit log, like the indexer but with its own
//! position, persisted in the store (`meta.next_seq`), and bounded by the writer's
//! committed head, so only durable lines become entries. Each `kind=deadletter` line
//! becomes an [`Entry`] whose id is the line's seq; the entries of a stretch of records and
//! the new position are written in one transaction. Deleting `DATA_DIR/dlq/` rebuilds every
//! entry (as `pending`) from the audit log. The follower is separate from the indexer so
//! that neither can hold up or break the other.
//!
//! # Replays
//! A replay is a [`Job`]: a persisted list of entry ids with a cursor. For each entry the
//! job (1) marks it `replaying`, counts the replay and records it as in flight, durably,
//! (2) sends one request to the target that `[[dlq.target]]` names for its task (never a
//! URL from the event), (3) records `replayed` (2xx) or `failed` with the answer kept, and
//! moves the cursor. The loop guard refuses an entry already sent `max_replays` times.
//!
//! # Restart
//! Unfinished jobs resume when the collector starts. An entry found `replaying` had its
//! request in flight when the collector stopped: it becomes `failed` with the answer
//! "interrupted" and is **not** sent again automatically, so a restart never sends any
//! entry twice. Someone may replay it explicitly; its `Idempotency-Key` lets a task using
//! the SDK's idempotency guard skip work it already did.
//!
//! # Audit
//! Every replay job (at its start and its end: who, which entries, result) and every
//! discard is appended to the audit log as a `kind=audit` record.
//!
//! # Cluster mode
//! Each shard copy runs its own `Dlq` ([`Dlq::start_following`]): the store in
//! `DATA_DIR/shards/<k>/dlq/`, following that copy's chain, its audit records in the
//! collector's own log with a `shard` field. The API routes by `s<k>-<n>` ids
//! ([`crate::cluster::dlq`]).

pub mod config;
pub mod replay;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use spoor_sdk::event::{Event, keys};
use spoor_sdk::logfmt::{ReadOptions, read_line};
use tokio::sync::watch;

pub use config::{DlqConfig, HeaderConfig, TargetConfig};
pub use replay::TokenBucket;
pub use store::{Attempt, DlqStore, Entry, Filter, Job, State, StoreError};

use crate::audit::{AuditRecord, AuditWriter, read_records};

/// How long the follower sleeps when there is nothing new.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The follower commits its position at least every this many records.
const FOLLOW_BATCH: usize = 10_000;

/// Turns an audit record into an entry when it is a `kind=deadletter` event.
pub fn entry_from_record(record: &AuditRecord) -> Option<Entry> {
    let (event, _) = read_line(
        &record.line,
        &ReadOptions {
            max_line_bytes: usize::MAX,
        },
    );
    entry_from_event(record.seq, &event)
}

/// Turns an event with `kind=deadletter` into an entry with id `seq`.
pub fn entry_from_event(seq: u64, event: &Event) -> Option<Entry> {
    use spoor_sdk::deadletter::fields;
    if event.get(keys::KIND) != Some(spoor_sdk::deadletter::KIND) {
        return None;
    }
    let s = |k: &str| event.get(k).map(str::to_string);
    Some(Entry {
        id: seq,
        ts: s(keys::TS),
        task: s(keys::TASK).unwrap_or_default(),
        task_id: s(keys::TASK_ID).unwrap_or_default(),
        attempts: event.get(fields::ATTEMPTS).and_then(|a| a.parse().ok()),
        error: s(fields::ERROR).unwrap_or_default(),
        first_failed: s(fields::FIRST_FAILED),
        last_failed: s(fields::LAST_FAILED),
        host: s(keys::HOST),
        version: s(keys::VERSION),
        payload_ref: s(fields::PAYLOAD_REF),
        payload: s(fields::PAYLOAD),
        payload_encoding: s(fields::PAYLOAD_ENCODING),
        payload_truncated: event.get(fields::PAYLOAD_TRUNCATED) == Some("true"),
        state: State::Pending,
        replays: 0,
        last_attempt: None,
        discarded_by: None,
    })
}

/// Errors of the dead-letter service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the audit log failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Something that should not happen (a thread or task died).
    #[error("dead-letter store: {0}")]
    Internal(String),
}

/// What a replay request picked, before anything is sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Selection {
    /// Entries that would be sent, with the URL they would go to.
    pub send: Vec<(Entry, String)>,
    /// Entries matched but refused, with why.
    pub refused: Vec<(Entry, String)>,
}

/// The running dead-letter service: store, follower thread, replay jobs.
pub struct Dlq {
    store: Arc<DlqStore>,
    config: DlqConfig,
    http: reqwest::Client,
    writer: Arc<AuditWriter>,
    /// Cluster mode: the shard whose store this is.
    shard: Option<u32>,
    stop: Arc<AtomicBool>,
    follower: Mutex<Option<JoinHandle<Result<(), DlqError>>>>,
    followed: watch::Receiver<u64>,
    jobs: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Dlq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlq").field("store", &self.store).finish()
    }
}

impl Dlq {
    /// Opens the store, marks interrupted sends failed, starts the follower and resumes
    /// unfinished jobs. Must be called inside a tokio runtime.
    pub fn start(
        data_dir: &Path,
        config: DlqConfig,
        writer: Arc<AuditWriter>,
    ) -> Result<Arc<Self>, DlqError> {
        let committed = writer.committed();
        Self::start_following(data_dir, data_dir, committed, config, writer, None)
    }

    /// Like [`Dlq::start`], with the store in `store_dir/dlq/` following the audit log in
    /// `log_dir` up to `committed`, and the audit records of replays and discards
    /// appended through `writer` (which may be another log). Cluster mode runs one per
    /// shard copy: the store and the followed log are the shard's, the records go to the
    /// collector's own log (a shard's chain holds only its stream's messages) and name
    /// the `shard`.
    pub fn start_following(
        store_dir: &Path,
        log_dir: &Path,
        committed: watch::Receiver<u64>,
        config: DlqConfig,
        writer: Arc<AuditWriter>,
        shard: Option<u32>,
    ) -> Result<Arc<Self>, DlqError> {
        let store = Arc::new(DlqStore::open(store_dir)?);
        let interrupted = store.recover_interrupted()?;
        if interrupted > 0 {
            tracing::warn!(
                entries = interrupted,
                "Dead-letter entries were being replayed when the collector stopped; marked failed (not re-sent)."
            );
        }
        // reqwest's TLS needs a process-wide crypto provider; the binary installs ring
        // first, and this is a no-op then.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DlqError::Internal(format!("building the HTTP client: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (followed_tx, followed) = watch::channel(store.next_seq()?);
        let thread = {
            let store = store.clone();
            let stop = stop.clone();
            let dir = log_dir.to_path_buf();
            std::thread::Builder::new()
                .name("spoor-dlq".into())
                .spawn(move || follow(&store, &dir, &committed, &stop, &followed_tx))
                .map_err(|e| DlqError::Internal(format!("starting the follower: {e}")))?
        };
        let dlq = Arc::new(Self {
            store,
            config,
            http,
            writer,
            shard,
            stop,
            follower: Mutex::new(Some(thread)),
            followed,
            jobs: Mutex::new(HashMap::new()),
        });
        for job in dlq.store.unfinished_jobs()? {
            tracing::info!(
                job = job.id,
                next = job.next,
                total = job.entries.len(),
                "Resuming a dead-letter replay job."
            );
            dlq.spawn_job(job.id, true);
        }
        Ok(dlq)
    }

    /// The store (read-only uses: listing, metrics).
    pub fn store(&self) -> &DlqStore {
        &self.store
    }

    /// The seq below which the audit log has been looked at.
    pub fn followed(&self) -> watch::Receiver<u64> {
        self.followed.clone()
    }

    /// Splits the entries matching `filter` (at most `max` to send) into those a replay
    /// would send and those it would refuse. With no state in the filter, pending and
    /// failed entries are considered.
    pub fn select(&self, filter: &Filter, max: usize) -> Result<Selection, DlqError> {
        let mut sel = Selection {
            send: Vec::new(),
            refused: Vec::new(),
        };
        for e in self.store.list(filter, usize::MAX)? {
            if filter.state.is_none() && !e.state.replayable() {
                continue;
            }
            if sel.send.len() >= max {
                break;
            }
            match self.check(&e) {
                Ok(url) => sel.send.push((e, url)),
                Err(why) => sel.refused.push((e, why)),
            }
        }
        Ok(sel)
    }

    /// Like [`Dlq::select`] for explicit ids (unknown ids are refused).
    pub fn select_ids(&self, ids: &[u64]) -> Result<Selection, DlqError> {
        let mut sel = Selection {
            send: Vec::new(),
            refused: Vec::new(),
        };
        for &id in ids {
            let Some(e) = self.store.get(id)? else {
                return Err(StoreError::NotFound(id).into());
            };
            match self.check(&e) {
                Ok(url) => sel.send.push((e, url)),
                Err(why) => sel.refused.push((e, why)),
            }
        }
        Ok(sel)
    }

    /// Whether `e` may be sent now, and where.
    pub fn check(&self, e: &Entry) -> Result<String, String> {
        let Some(target) = self.config.target_for(&e.task) else {
            return Err(format!(
                "no [[dlq.target]] for task {:?} and no default (task = \"*\")",
                e.task
            ));
        };
        if !e.state.replayable() {
            return Err(format!("entry is {}", e.state));
        }
        if e.replays >= target.max_replays {
            return Err(format!(
                "loop guard: already replayed {} times (max_replays = {})",
                e.replays, target.max_replays
            ));
        }
        Ok(target.url.clone())
    }

    /// Creates a replay job over `ids` (persisted) and starts it; the returned handle ends
    /// when the job is done.
    pub async fn replay(
        self: &Arc<Self>,
        caller: &str,
        ids: Vec<u64>,
        rate: Option<f64>,
    ) -> Result<Job, DlqError> {
        let store = self.store.clone();
        let who = caller.to_string();
        let job = blocking(move || store.create_job(&who, rate, ids)).await?;
        self.audit(vec![
            ("action", "dlq.replay.start".into()),
            ("caller", caller.to_string()),
            ("job", job.id.to_string()),
            ("entries", join_ids(&job.entries)),
            (
                "rate",
                rate.map_or_else(|| "unlimited".into(), |r| r.to_string()),
            ),
        ])
        .await;
        self.spawn_job(job.id, false);
        Ok(job)
    }

    /// Waits until job `id` has finished (or the collector stops it).
    pub async fn wait(&self, id: u64) -> Result<Option<Job>, DlqError> {
        let handle = self.jobs.lock().map_err(poisoned)?.remove(&id);
        if let Some(h) = handle {
            let _ = h.await;
        }
        let store = self.store.clone();
        blocking(move || store.job(id)).await
    }

    /// Marks an entry discarded, with an audit record.
    pub async fn discard(&self, caller: &str, id: u64) -> Result<Entry, DlqError> {
        let store = self.store.clone();
        let who = caller.to_string();
        let result = blocking(move || store.discard(id, &who)).await;
        self.audit(vec![
            ("action", "dlq.discard".into()),
            ("caller", caller.to_string()),
            ("entries", id.to_string()),
            (
                "result",
                match &result {
                    Ok(_) => "discarded".into(),
                    Err(e) => format!("refused: {e}"),
                },
            ),
        ])
        .await;
        result
    }

    fn spawn_job(self: &Arc<Self>, id: u64, resumed: bool) {
        let me = self.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = me.run_job(id, resumed).await {
                tracing::error!(job = id, error = %e, "Dead-letter replay job stopped.");
            }
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.retain(|_, h| !h.is_finished());
            jobs.insert(id, handle);
        }
    }

    async fn run_job(self: Arc<Self>, id: u64, resumed: bool) -> Result<(), DlqError> {
        let store = self.store.clone();
        let Some(job) = blocking(move || store.job(id)).await? else {
            return Err(StoreError::NotFound(id).into());
        };
        let mut bucket = job.rate.map(TokenBucket::new);
        // The bucket paces the loop; this keeps the requests themselves at least
        // `1/rate` apart even when marking an entry took longer for one than the next.
        let spacing = job
            .rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let mut last_sent: Option<tokio::time::Instant> = None;
        let mut outcome: HashMap<&'static str, Vec<u64>> = HashMap::new();
        let mut job = job;
        while !job.done && !self.stop.load(Ordering::SeqCst) {
            let Some(&entry_id) = job.entries.get(job.next) else {
                break;
            };
            let store = self.store.clone();
            let entry = blocking(move || store.get(entry_id)).await?;
            let target = entry
                .as_ref()
                .and_then(|e| self.config.target_for(&e.task))
                .cloned();
            // Only wait for a token when the entry will (probably) be sent.
            let sendable = entry.as_ref().is_some_and(|e| self.check(e).is_ok());
            if sendable && let Some(b) = bucket.as_mut() {
                b.take().await;
            }
            let store = self.store.clone();
            let max = target.as_ref().map(|t| t.max_replays);
            let (after, to_send) = blocking(move || store.begin_send(id, max)).await?;
            job = after;
            let (Some(e), Some(target)) = (to_send, target) else {
                outcome.entry("refused").or_default().push(entry_id);
                continue;
            };
            if let (Some(gap), Some(last)) = (spacing, last_sent) {
                tokio::time::sleep_until(last + gap).await;
            }
            last_sent = Some(tokio::time::Instant::now());
            let (ok, attempt) = replay::send(&self.http, &target, &e, id).await;
            tracing::info!(job = id, entry = e.id, ok, status = ?attempt.status, "Dead-letter entry replayed.");
            let store = self.store.clone();
            job = blocking(move || store.finish_send(id, e.id, ok, attempt)).await?;
            outcome
                .entry(if ok { "replayed" } else { "failed" })
                .or_default()
                .push(entry_id);
        }
        if job.done {
            let ids = |k: &str| outcome.get(k).map_or_else(String::new, |v| join_ids(v));
            self.audit(vec![
                ("action", "dlq.replay.done".into()),
                ("caller", job.caller.clone()),
                ("job", job.id.to_string()),
                ("resumed", resumed.to_string()),
                (
                    "result",
                    format!(
                        "replayed={} failed={} refused={}",
                        job.replayed, job.failed, job.refused
                    ),
                ),
                ("replayed_entries", ids("replayed")),
                ("failed_entries", ids("failed")),
                ("refused_entries", ids("refused")),
            ])
            .await;
        }
        Ok(())
    }

    /// Appends a `kind=audit` record; failures are logged (the action already happened).
    async fn audit(&self, fields: Vec<(&str, String)>) {
        let mut ev = Event::new();
        ev.set_timestamp(time::OffsetDateTime::now_utc());
        ev.push(keys::LEVEL, "info");
        ev.push(keys::MSG, "dead-letter store action");
        ev.push(keys::KIND, "audit");
        if let Some(k) = self.shard {
            ev.push("shard", k.to_string());
        }
        for (k, v) in fields {
            ev.push(k, v);
        }
        let line = ev.to_line().into_bytes();
        if let Err(e) = self.writer.append("", "collector", vec![line]).await {
            tracing::error!(error = %e, "Could not write the dead-letter audit record.");
        }
    }

    /// Stops the follower and the jobs (jobs resume at the next start).
    pub fn shutdown(&self) -> Result<(), DlqError> {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut jobs) = self.jobs.lock() {
            for (_, h) in jobs.drain() {
                h.abort();
            }
        }
        let thread = self.follower.lock().map_err(poisoned)?.take();
        match thread.map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(DlqError::Internal("the follower thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Dlq {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Appends the stores' gauges to a Prometheus text answer: entries by state (every state,
/// zeros included, so an alert rule can watch them) and by task and state, summed over
/// `dlqs` (one store, or in cluster mode those of the shards this collector owns).
pub fn write_metrics(out: &mut String, dlqs: &[&Dlq]) {
    use std::fmt::Write as _;
    let mut sum = std::collections::BTreeMap::<(String, &'static str), (State, u64)>::new();
    for dlq in dlqs {
        match dlq.store.counts() {
            Ok(c) => {
                for (task, st, n) in c {
                    sum.entry((task, st.as_str())).or_insert((st, 0)).1 += n;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not count dead-letter entries for /metrics.");
                return;
            }
        }
    }
    let counts: Vec<(String, State, u64)> = sum
        .into_iter()
        .map(|((task, _), (st, n))| (task, st, n))
        .collect();
    let _ = writeln!(
        out,
        "# HELP spoor_dlq_entries Dead-letter entries by state.\n# TYPE spoor_dlq_entries gauge"
    );
    for st in State::ALL {
        let n: u64 = counts.iter().filter(|c| c.1 == st).map(|c| c.2).sum();
        let _ = writeln!(out, "spoor_dlq_entries{{state=\"{st}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP spoor_dlq_task_entries Dead-letter entries by task and state.\n# TYPE spoor_dlq_task_entries gauge"
    );
    for (task, st, n) in counts {
        let task = task
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "spoor_dlq_task_entries{{task=\"{task}\",state=\"{st}\"}} {n}"
        );
    }
}

fn poisoned<T>(_: T) -> DlqError {
    DlqError::Internal("a lock was poisoned".into())
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DlqError::Internal(e.to_string()))?
        .map_err(DlqError::from)
}

fn follow(
    store: &DlqStore,
    data_dir: &Path,
    committed: &watch::Receiver<u64>,
    stop: &AtomicBool,
    followed: &watch::Sender<u64>,
) -> Result<(), DlqError> {
    let mut next_seq = store.next_seq()?;
    let mut reader = read_records(data_dir, next_seq);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let head = *committed.borrow();
        let mut found = Vec::new();
        let mut seen = 0usize;
        while next_seq < head && seen < FOLLOW_BATCH {
            match reader.next_record()? {
                Some(record) => {
                    next_seq = record.seq + 1;
                    seen += 1;
                    if let Some(e) = entry_from_record(&record) {
                        found.push(e);
                    }
                }
                None => break,
            }
        }
        if seen > 0 {
            store.ingest(&found, next_seq)?;
            followed.send_replace(next_seq);
            if !found.is_empty() {
                tracing::info!(
                    entries = found.len(),
                    next_seq,
                    "Dead-letter entries stored."
                );
            }
        } else {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_only_from_deadletter_events() {
        let line = b"ts=2026-11-30T03:00:00Z level=error msg=\"Gave up\" task=parse_email task_id=r-1 host=h1 version=1.2 kind=deadletter attempts=3 error=\"smtp down\" first_failed=2026-11-30T02:59:00Z last_failed=2026-11-30T03:00:00Z payload_ref=m-9 url=http://evil.example/";
        let (ev, _) = Event::from_line(line);
        let e = entry_from_event(42, &ev).expect("an entry");
        assert_eq!(e.id, 42);
        assert_eq!(
            (e.task.as_str(), e.task_id.as_str()),
            ("parse_email", "r-1")
        );
        assert_eq!((e.attempts, e.error.as_str()), (Some(3), "smtp down"));
        assert_eq!(e.payload_ref.as_deref(), Some("m-9"));
        assert_eq!(e.host.as_deref(), Some("h1"));
        assert_eq!(e.state, State::Pending);
        let (ev, _) = Event::from_line(b"level=error task=x msg=boom");
        assert!(entry_from_event(1, &ev).is_none());
    }

    #[test]
    fn check_applies_targets_and_the_loop_guard() {
        let config: DlqConfig = toml::from_str(
            "[[target]]\ntask = \"a\"\nurl = \"http://127.0.0.1:1/a\"\nmax_replays = 1",
        )
        .expect("config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(async {
            let log =
                crate::audit::AuditLog::open(dir.path(), crate::audit::AuditOptions::default())
                    .expect("log");
            let writer = Arc::new(AuditWriter::spawn(log).expect("writer"));
            let dlq = Dlq::start(dir.path(), config, writer).expect("start");
            let mut e = store::tests::entry(1, "a", "x");
            assert_eq!(dlq.check(&e).as_deref(), Ok("http://127.0.0.1:1/a"));
            e.replays = 1;
            assert!(dlq.check(&e).is_err_and(|w| w.contains("loop guard")));
            e.task = "b".into();
            e.replays = 0;
            assert!(
                dlq.check(&e)
                    .is_err_and(|w| w.contains("no [[dlq.target]]"))
            );
            dlq.shutdown().expect("shutdown");
        });
    }
}
