//! The durable dead-letter store: one `redb` file, `DATA_DIR/dlq/dlq.redb`.
//!
//! Tables (values are JSON, so fields can be added without a migration):
//! - `entries`: entry id (the audit seq of the source `kind=deadletter` line) → [`Entry`];
//! - `jobs`: job id → [`Job`], a replay job with its persisted progress;
//! - `meta`: `next_seq` (the follower's position in the audit log) and `next_job`.
//!
//! Every change is one redb write transaction, durable when it returns. Entries are
//! derived from the audit log: an entry is inserted in the same transaction that moves
//! `next_seq` past its line, so a crash neither loses nor duplicates one. Deleting the file
//! rebuilds every entry, as `pending`, from the audit log (replay history stays in the
//! audit log's `kind=audit` records).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_SEQ: &str = "next_seq";
const NEXT_JOB: &str = "next_job";

/// Errors of the dead-letter store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed.
    #[error("dead-letter store {path}: {message}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// A stored value is not readable.
    #[error("dead-letter store: unreadable record {key}: {source}")]
    Decode {
        /// Which key.
        key: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No such entry or job.
    #[error("no dead-letter entry {0}")]
    NotFound(u64),
    /// The entry is not in a state that allows the change.
    #[error("entry {id} is {state}; {what}")]
    State {
        /// Which entry.
        id: u64,
        /// Its state.
        state: State,
        /// What was refused.
        what: &'static str,
    },
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for someone to replay or discard it.
    Pending,
    /// Being sent right now (marked durably before the request leaves).
    Replaying,
    /// The target answered 2xx.
    Replayed,
    /// The target answered otherwise, or could not be reached, or the collector stopped
    /// while the request was in flight.
    Failed,
    /// Put aside by someone; never replayed.
    Discarded,
}

impl State {
    /// All states, in the order metrics list them.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::Replaying,
        State::Replayed,
        State::Failed,
        State::Discarded,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Replaying => "replaying",
            State::Replayed => "replayed",
            State::Failed => "failed",
            State::Discarded => "discarded",
        }
    }

    /// Whether a replay may pick the entry (the loop guard is checked separately).
    pub fn replayable(self) -> bool {
        matches!(self, State::Pending | State::Failed)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state `{s}` (pending, replaying, replayed, failed, discarded)")
            })
    }
}

/// The answer of the last replay attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was sent (RFC 3339).
    pub at: String,
    /// The replay job.
    pub job: u64,
    /// The HTTP status, when one came back.
    pub status: Option<u16>,
    /// The start of the answer's body, or why there was none.
    pub answer: String,
}

/// One dead-lettered piece of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The seq of the source line in the audit log; also the entry's id.
    pub id: u64,
    /// The event's `ts`.
    pub ts: Option<String>,
    /// Task name.
    pub task: String,
    /// The run ID (the idempotency key of replays).
    pub task_id: String,
    /// How many attempts the task made.
    pub attempts: Option<u32>,
    /// The last error.
    pub error: String,
    /// First failure (RFC 3339 as written by the SDK).
    pub first_failed: Option<String>,
    /// Last failure.
    pub last_failed: Option<String>,
    /// Where it ran.
    pub host: Option<String>,
    /// Task code version.
    pub version: Option<String>,
    /// The payload's ID.
    pub payload_ref: Option<String>,
    /// The payload inline.
    pub payload: Option<String>,
    /// `base64` when the inline payload is binary.
    pub payload_encoding: Option<String>,
    /// Whether the inline payload was cut.
    #[serde(default)]
    pub payload_truncated: bool,
    /// Current state.
    pub state: State,
    /// How many times it was sent (the loop guard counts these).
    #[serde(default)]
    pub replays: u32,
    /// The last attempt's outcome.
    #[serde(default)]
    pub last_attempt: Option<Attempt>,
    /// Who discarded it, and when.
    #[serde(default)]
    pub discarded_by: Option<String>,
}

impl Entry {
    /// The `Idempotency-Key` replays carry: the task_id, or `dlq-<id>` without one.
    pub fn idempotency_key(&self) -> String {
        if self.task_id.is_empty() {
            format!("dlq-{}", self.id)
        } else {
            self.task_id.clone()
        }
    }

    /// The time used by time-range filters: last failure, else `ts`.
    pub fn time(&self) -> Option<OffsetDateTime> {
        self.last_failed
            .as_deref()
            .or(self.ts.as_deref())
            .and_then(|t| spoor_sdk::timestamp::parse_timestamp(t).ok())
    }
}

/// Which entries a listing or a bulk replay picks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Exact task name.
    pub task: Option<String>,
    /// Case-insensitive substring of the error.
    pub error: Option<String>,
    /// Only these states.
    pub state: Option<State>,
    /// Last failure at or after (RFC 3339).
    #[serde(skip)]
    pub from: Option<OffsetDateTime>,
    /// Last failure before.
    #[serde(skip)]
    pub to: Option<OffsetDateTime>,
}

impl Filter {
    /// Whether `e` matches.
    pub fn matches(&self, e: &Entry) -> bool {
        if self.task.as_deref().is_some_and(|t| t != e.task) {
            return false;
        }
        if self.state.is_some_and(|s| s != e.state) {
            return false;
        }
        if let Some(needle) = &self.error
            && !e.error.to_lowercase().contains(&needle.to_lowercase())
        {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Some(t) = e.time() else { return false };
            if self.from.is_some_and(|f| t < f) || self.to.is_some_and(|to| t >= to) {
                return false;
            }
        }
        true
    }
}

/// A replay job: the entries it covers and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Who asked (token name).
    pub caller: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Requests per second, when limited.
    pub rate: Option<f64>,
    /// The entries, in the order they are sent.
    pub entries: Vec<u64>,
    /// Index into `entries` of the next one to handle.
    pub next: usize,
    /// The entry whose request may be in flight (marked before sending).
    pub in_flight: Option<u64>,
    /// Outcome counts.
    pub replayed: u64,
    /// Non-2xx, unreachable, or interrupted.
    pub failed: u64,
    /// Skipped: loop guard, state changed meanwhile, or no target.
    pub refused: u64,
    /// Whether every entry was handled.
    pub done: bool,
}

/// The store.
pub struct DlqStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for DlqStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqStore")
            .field("path", &self.path)
            .finish()
    }
}

fn now_text() -> String {
    spoor_sdk::timestamp::format_timestamp(OffsetDateTime::now_utc())
}

impl DlqStore {
    /// Opens (or creates) `data_dir/dlq/dlq.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("dlq");
        let path = dir.join("dlq.redb");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let store = Self { db, path };
        // Create the tables so readers never meet a missing one.
        store.write(|tx| {
            tx.open_table(ENTRIES).map_err(db_err)?;
            tx.open_table(JOBS).map_err(db_err)?;
            tx.open_table(META).map_err(db_err)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, message: String) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message,
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, DbOrStore>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e.to_string()))?;
        let out = match f(&tx) {
            Ok(v) => v,
            Err(DbOrStore::Db(m)) => return Err(self.err(m)),
            Err(DbOrStore::Store(e)) => return Err(e),
        };
        tx.commit().map_err(|e| self.err(e.to_string()))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, DbOrStore>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e.to_string()))?;
        f(&tx).map_err(|e| match e {
            DbOrStore::Db(m) => self.err(m),
            DbOrStore::Store(e) => e,
        })
    }

    /// The seq of the next audit record the follower has to look at.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(META).map_err(db_err)?;
            Ok(t.get(NEXT_SEQ).map_err(db_err)?.map_or(0, |v| v.value()))
        })
    }

    /// Inserts the entries found in audit records below `next_seq` and moves the follower's
    /// position there, atomically. An entry already present is left alone.
    pub fn ingest(&self, entries: &[Entry], next_seq: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut t = tx.open_table(ENTRIES).map_err(db_err)?;
            for e in entries {
                if t.get(e.id).map_err(db_err)?.is_none() {
                    t.insert(e.id, encode(e).as_slice()).map_err(db_err)?;
                }
            }
            let mut m = tx.open_table(META).map_err(db_err)?;
            m.insert(NEXT_SEQ, next_seq).map_err(db_err)?;
            Ok(())
        })
    }

    /// One entry.
    pub fn get(&self, id: u64) -> Result<Option<Entry>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(ENTRIES).map_err(db_err)?;
            match t.get(id).map_err(db_err)? {
                Some(v) => Ok(Some(decode(id, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Entries matching `filter`, oldest first, at most `limit`.
    pub fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(ENTRIES).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(db_err)?;
                let e = decode(k.value(), v.value())?;
                if filter.matches(&e) {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }

    /// How many entries are in each (task, state).
    pub fn counts(&self) -> Result<Vec<(String, State, u64)>, StoreError> {
        let mut map = std::collections::BTreeMap::<(String, &'static str), (State, u64)>::new();
        for e in self.list(&Filter::default(), usize::MAX)? {
            map.entry((e.task.clone(), e.state.as_str()))
                .or_insert((e.state, 0))
                .1 += 1;
        }
        Ok(map
            .into_iter()
            .map(|((task, _), (state, n))| (task, state, n))
            .collect())
    }

    /// Marks a pending or failed entry `discarded`.
    pub fn discard(&self, id: u64, who: &str) -> Result<Entry, StoreError> {
        self.update(id, |e| {
            if !e.state.replayable() {
                return Err(StoreError::State {
                    id,
                    state: e.state,
                    what: "only pending or failed entries can be discarded",
                });
            }
            e.state = State::Discarded;
            e.discarded_by = Some(format!("{who} at {}", now_text()));
            Ok(())
        })
    }

    fn update(
        &self,
        id: u64,
        f: impl FnOnce(&mut Entry) -> Result<(), StoreError>,
    ) -> Result<Entry, StoreError> {
        self.write(|tx| {
            let mut t = tx.open_table(ENTRIES).map_err(db_err)?;
            let mut e = match t.get(id).map_err(db_err)? {
                Some(v) => decode(id, v.value())?,
                None => return Err(StoreError::NotFound(id).into()),
            };
            f(&mut e)?;
            t.insert(id, encode(&e).as_slice()).map_err(db_err)?;
            Ok(e)
        })
    }

    /// Creates a job over `entries` and returns it.
    pub fn create_job(
        &self,
        caller: &str,
        rate: Option<f64>,
        entries: Vec<u64>,
    ) -> Result<Job, StoreError> {
        self.write(|tx| {
            let mut m = tx.open_table(META).map_err(db_err)?;
            let id = m.get(NEXT_JOB).map_err(db_err)?.map_or(1, |v| v.value());
            m.insert(NEXT_JOB, id + 1).map_err(db_err)?;
            let job = Job {
                id,
                caller: caller.to_string(),
                created: now_text(),
                rate,
                entries,
                next: 0,
                in_flight: None,
                replayed: 0,
                failed: 0,
                refused: 0,
                done: false,
            };
            let mut j = tx.open_table(JOBS).map_err(db_err)?;
            j.insert(id, encode(&job).as_slice()).map_err(db_err)?;
            Ok(job)
        })
    }

    /// One job.
    pub fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(JOBS).map_err(db_err)?;
            match t.get(id).map_err(db_err)? {
                Some(v) => Ok(Some(decode(id, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Jobs that have not finished (to resume after a restart).
    pub fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(JOBS).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let job: Job = decode(k.value(), v.value())?;
                if !job.done {
                    out.push(job);
                }
            }
            Ok(out)
        })
    }

    /// Step 1 of sending the job's next entry, in one transaction: checks that the entry
    /// may be sent (state, loop guard `max_replays`), marks it `replaying`, counts the
    /// replay and records it as the job's `in_flight`. Returns the entry to send, or
    /// `Ok(None)` when it was refused (the job moves on).
    pub fn begin_send(
        &self,
        job_id: u64,
        max_replays: Option<u32>,
    ) -> Result<(Job, Option<Entry>), StoreError> {
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS).map_err(db_err)?;
            let mut job: Job = match jobs.get(job_id).map_err(db_err)? {
                Some(v) => decode(job_id, v.value())?,
                None => return Err(StoreError::NotFound(job_id).into()),
            };
            let Some(&id) = job.entries.get(job.next) else {
                job.done = true;
                jobs.insert(job_id, encode(&job).as_slice())
                    .map_err(db_err)?;
                return Ok((job, None));
            };
            let mut entries = tx.open_table(ENTRIES).map_err(db_err)?;
            let entry: Option<Entry> = match entries.get(id).map_err(db_err)? {
                Some(v) => Some(decode(id, v.value())?),
                None => None,
            };
            let sendable = match (&entry, max_replays) {
                (Some(e), Some(max)) => e.state.replayable() && e.replays < max,
                _ => false,
            };
            let out = match entry {
                Some(mut e) if sendable => {
                    e.state = State::Replaying;
                    e.replays += 1;
                    entries.insert(id, encode(&e).as_slice()).map_err(db_err)?;
                    job.in_flight = Some(id);
                    Some(e)
                }
                _ => {
                    job.refused += 1;
                    job.next += 1;
                    job.done = job.next >= job.entries.len();
                    None
                }
            };
            jobs.insert(job_id, encode(&job).as_slice())
                .map_err(db_err)?;
            Ok((job, out))
        })
    }

    /// Step 2: records the outcome of the in-flight entry and moves the job on.
    pub fn finish_send(
        &self,
        job_id: u64,
        entry_id: u64,
        ok: bool,
        attempt: Attempt,
    ) -> Result<Job, StoreError> {
        self.write(|tx| {
            let mut jobs = tx.open_table(JOBS).map_err(db_err)?;
            let mut job: Job = match jobs.get(job_id).map_err(db_err)? {
                Some(v) => decode(job_id, v.value())?,
                None => return Err(StoreError::NotFound(job_id).into()),
            };
            let mut entries = tx.open_table(ENTRIES).map_err(db_err)?;
            let mut e: Entry = match entries.get(entry_id).map_err(db_err)? {
                Some(v) => decode(entry_id, v.value())?,
                None => return Err(StoreError::NotFound(entry_id).into()),
            };
            e.state = if ok { State::Replayed } else { State::Failed };
            e.last_attempt = Some(attempt);
            entries
                .insert(entry_id, encode(&e).as_slice())
                .map_err(db_err)?;
            if ok {
                job.replayed += 1;
            } else {
                job.failed += 1;
            }
            if job.in_flight == Some(entry_id) {
                job.in_flight = None;
                job.next += 1;
            }
            job.done = job.next >= job.entries.len();
            jobs.insert(job_id, encode(&job).as_slice())
                .map_err(db_err)?;
            Ok(job)
        })
    }

    /// After a restart: every entry left `replaying` had its request in flight when the
    /// collector stopped, so nobody knows whether the target did the work. It becomes
    /// `failed` with that said in its answer and is *not* sent again automatically (a
    /// person may replay it; the `Idempotency-Key` makes that safe for tasks using the
    /// SDK's guard). Jobs whose `in_flight` entry that was move past it. Returns how many
    /// entries were marked.
    pub fn recover_interrupted(&self) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut entries = tx.open_table(ENTRIES).map_err(db_err)?;
            let mut stuck = Vec::new();
            for item in entries.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let e: Entry = decode(k.value(), v.value())?;
                if e.state == State::Replaying {
                    stuck.push(e);
                }
            }
            let mut jobs = tx.open_table(JOBS).map_err(db_err)?;
            let mut unfinished = Vec::new();
            for item in jobs.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let job: Job = decode(k.value(), v.value())?;
                if !job.done && job.in_flight.is_some() {
                    unfinished.push(job);
                }
            }
            for mut job in unfinished {
                job.in_flight = None;
                job.next += 1;
                job.failed += 1;
                job.done = job.next >= job.entries.len();
                jobs.insert(job.id, encode(&job).as_slice())
                    .map_err(db_err)?;
            }
            let n = stuck.len();
            for mut e in stuck {
                e.state = State::Failed;
                e.last_attempt = Some(Attempt {
                    at: now_text(),
                    job: e.last_attempt.as_ref().map_or(0, |a| a.job),
                    status: None,
                    answer: "interrupted: the collector stopped while the request was in \
                             flight; the target may or may not have done the work"
                        .into(),
                });
                entries
                    .insert(e.id, encode(&e).as_slice())
                    .map_err(db_err)?;
            }
            Ok(n)
        })
    }
}

/// Internal: a redb error message or a store error, so closures can use `?` on both.
enum DbOrStore {
    Db(String),
    Store(StoreError),
}

impl From<StoreError> for DbOrStore {
    fn from(e: StoreError) -> Self {
        DbOrStore::Store(e)
    }
}

fn db_err(e: impl std::fmt::Display) -> DbOrStore {
    DbOrStore::Db(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: u64, bytes: &[u8]) -> Result<T, DbOrStore> {
    serde_json::from_slice(bytes)
        .map_err(|source| DbOrStore::Store(StoreError::Decode { key, source }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(id: u64, task: &str, error: &str) -> Entry {
        Entry {
            id,
            ts: Some("2026-11-30T03:00:00Z".into()),
            task: task.into(),
            task_id: format!("run-{id}"),
            attempts: Some(3),
            error: error.into(),
            first_failed: Some("2026-11-30T02:59:00Z".into()),
            last_failed: Some(format!("2026-11-30T03:00:{:02}Z", id % 60)),
            host: Some("web-1".into()),
            version: None,
            payload_ref: Some(format!("p-{id}")),
            payload: None,
            payload_encoding: None,
            payload_truncated: false,
            state: State::Pending,
            replays: 0,
            last_attempt: None,
            discarded_by: None,
        }
    }

    fn attempt(job: u64, status: u16) -> Attempt {
        Attempt {
            at: now_text(),
            job,
            status: Some(status),
            answer: "ok".into(),
        }
    }

    #[test]
    fn ingest_is_atomic_with_the_position_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = DlqStore::open(dir.path()).expect("open");
            assert_eq!(s.next_seq().expect("seq"), 0);
            s.ingest(&[entry(3, "a", "boom"), entry(7, "b", "bang")], 10)
                .expect("ingest");
            // Ingesting the same entry again (a rebuild) leaves it alone.
            s.discard(3, "ops").expect("discard");
            s.ingest(&[entry(3, "a", "boom")], 11).expect("again");
        }
        let s = DlqStore::open(dir.path()).expect("reopen");
        assert_eq!(s.next_seq().expect("seq"), 11);
        let e = s.get(3).expect("get").expect("present");
        assert_eq!(e.state, State::Discarded);
        assert!(
            e.discarded_by
                .as_deref()
                .is_some_and(|d| d.starts_with("ops"))
        );
        assert_eq!(s.list(&Filter::default(), 10).expect("list").len(), 2);
    }

    #[test]
    fn filters_by_task_error_state_and_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = DlqStore::open(dir.path()).expect("open");
        s.ingest(
            &[
                entry(1, "a", "Connection refused"),
                entry(2, "a", "timeout"),
                entry(30, "b", "connection reset"),
            ],
            31,
        )
        .expect("ingest");
        let ids = |f: Filter| -> Vec<u64> {
            s.list(&f, 100)
                .expect("list")
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(
            ids(Filter {
                task: Some("a".into()),
                ..Filter::default()
            }),
            [1, 2]
        );
        assert_eq!(
            ids(Filter {
                error: Some("CONNECTION".into()),
                ..Filter::default()
            }),
            [1, 30]
        );
        let from = spoor_sdk::timestamp::parse_timestamp("2026-11-30T03:00:02Z").ok();
        assert_eq!(
            ids(Filter {
                from,
                ..Filter::default()
            }),
            [2, 30]
        );
        s.discard(2, "x").expect("discard");
        assert_eq!(
            ids(Filter {
                state: Some(State::Pending),
                ..Filter::default()
            }),
            [1, 30]
        );
        assert!(s.discard(2, "x").is_err(), "discarding twice is refused");
        assert!(matches!(s.discard(99, "x"), Err(StoreError::NotFound(99))));
    }

    #[test]
    fn jobs_move_through_entries_and_the_loop_guard_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = DlqStore::open(dir.path()).expect("open");
        s.ingest(&[entry(1, "a", "x"), entry(2, "a", "x")], 3)
            .expect("ingest");
        let job = s.create_job("ops", None, vec![1, 2]).expect("job");
        assert_eq!(job.id, 1);
        let (_, e) = s.begin_send(job.id, Some(2)).expect("begin");
        let e = e.expect("sendable");
        assert_eq!(s.get(1).expect("get").expect("e").state, State::Replaying);
        s.finish_send(job.id, e.id, false, attempt(job.id, 500))
            .expect("finish");
        let (_, e) = s.begin_send(job.id, Some(2)).expect("begin");
        let done = s
            .finish_send(job.id, e.expect("sendable").id, true, attempt(job.id, 200))
            .expect("finish");
        assert!(done.done);
        assert_eq!((done.replayed, done.failed), (1, 1));
        // A failed entry may be replayed again.
        let job = s.create_job("ops", None, vec![1]).expect("job");
        assert_eq!(job.id, 2);
        let (_, e) = s.begin_send(job.id, Some(2)).expect("begin");
        let done = s
            .finish_send(job.id, e.expect("sendable").id, false, attempt(job.id, 503))
            .expect("finish");
        assert!(done.done);
        let kept = s
            .get(1)
            .expect("get")
            .expect("e")
            .last_attempt
            .expect("attempt");
        assert_eq!((kept.job, kept.status), (2, Some(503)));
        // Entry 1 failed twice: max_replays = 2 refuses a third send; entry 2 is replayed.
        let job = s.create_job("ops", None, vec![1, 2]).expect("job");
        let (j, e) = s.begin_send(job.id, Some(2)).expect("begin");
        assert!(e.is_none());
        assert_eq!(j.refused, 1);
        let (j, e) = s.begin_send(job.id, Some(2)).expect("begin");
        assert!(e.is_none(), "a replayed entry is not sent again");
        assert!(j.done);
        assert_eq!(s.get(1).expect("get").expect("e").replays, 2);
        assert_eq!(s.get(1).expect("get").expect("e").state, State::Failed);
    }

    #[test]
    fn an_interrupted_send_is_failed_not_resent() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = DlqStore::open(dir.path()).expect("open");
            s.ingest(&[entry(1, "a", "x"), entry(2, "a", "x")], 3)
                .expect("ingest");
            let job = s.create_job("ops", Some(1.0), vec![1, 2]).expect("job");
            let (_, e) = s.begin_send(job.id, Some(3)).expect("begin");
            assert!(e.is_some());
            // The collector dies here, with entry 1's request in flight.
        }
        let s = DlqStore::open(dir.path()).expect("reopen");
        assert_eq!(s.recover_interrupted().expect("recover"), 1);
        let e = s.get(1).expect("get").expect("e");
        assert_eq!(e.state, State::Failed);
        assert!(
            e.last_attempt
                .expect("attempt")
                .answer
                .contains("interrupted")
        );
        let jobs = s.unfinished_jobs().expect("jobs");
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].next, jobs[0].in_flight), (1, None));
        let (_, e) = s.begin_send(jobs[0].id, Some(3)).expect("begin");
        assert_eq!(e.expect("entry 2 next").id, 2);
    }

    #[test]
    fn counts_by_task_and_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = DlqStore::open(dir.path()).expect("open");
        s.ingest(
            &[entry(1, "a", "x"), entry(2, "a", "x"), entry(3, "b", "x")],
            4,
        )
        .expect("ingest");
        s.discard(1, "x").expect("discard");
        let c = s.counts().expect("counts");
        assert!(c.contains(&("a".into(), State::Pending, 1)));
        assert!(c.contains(&("a".into(), State::Discarded, 1)));
        assert!(c.contains(&("b".into(), State::Pending, 1)));
    }
}
