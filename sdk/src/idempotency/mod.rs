//! The idempotency guard: run a task's work at most once per payload, so a redelivered or
//! replayed message returns the stored result instead of charging the card twice.
//! Modelled on the idempotency utility of AWS Lambda Powertools.
//!
//! # Keys
//! The key is `task#<hex SHA-256>` of the canonical JSON (object keys sorted, no
//! whitespace) of the payload, or of the parts chosen by JSON pointers
//! ([`IdempotencyConfig::with_key_parts`]). A chosen part that is missing (or null) is an
//! error, or by option ([`MissingKey::Warn`]) a warning after which the work runs without
//! protection. An optional second set of pointers chooses the parts whose hash is stored
//! for validation: a later call with the same key but different validated parts gets
//! [`IdempotencyError::PayloadMismatch`].
//!
//! # Records and the one conditional write
//! A record is in progress (with a lease: a run that crashed blocks the key only until the
//! lease ends), completed (with the result, until it expires; default one hour), or expired
//! (either kind, past its time; treated as absent). Exactly one caller wins the atomic
//! conditional write that creates the in-progress record (insert if absent, or
//! compare-and-set over an expired record) and runs the work; a concurrent caller gets
//! [`IdempotencyError::AlreadyInProgress`]; a later caller gets the stored result. When the
//! work succeeds the record becomes completed; when it fails the record is removed so a retry
//! can run. Both updates are compare-and-set on the exact record written, so a run whose
//! lease was taken over cannot clobber the new owner's record.
//!
//! # Stores
//! Stores implement [`Store`]: [`MemoryStore`] (one process), `RedbStore` (feature `redb`:
//! one host, on disk) and `RedisStore` (feature `redis`: many hosts). Time comes from an
//! injected [`Clock`]; records carry absolute expiry times in Unix milliseconds, so hosts
//! must have roughly synchronised clocks. [`Idempotency::with_cache`] adds an in-process
//! cache of completed records (never of in-progress ones).
//!
//! ```
//! use spoor_sdk::idempotency::{Idempotency, IdempotencyConfig, MemoryStore};
//!
//! let guard = Idempotency::new(MemoryStore::new(), IdempotencyConfig::default());
//! let payload = serde_json::json!({"order": 42, "amount": 12});
//! let mut charged = 0;
//! for _ in 0..3 {
//!     let receipt: String = guard
//!         .run("charge", &payload, || { charged += 1; Ok::<_, String>("receipt-1".to_string()) })
//!         .expect("runs once, then returns the stored result");
//!     assert_eq!(receipt, "receipt-1");
//! }
//! assert_eq!(charged, 1);
//! ```

mod key;
mod memory;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "redis")]
mod redis;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock, unix_millis};

pub use key::{canonical_json, hash_hex};
pub use memory::MemoryStore;
#[cfg(feature = "redb")]
pub use redb::RedbStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// A record's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A run holds the key until `expires_at_ms` (its lease).
    InProgress,
    /// The work finished; `result` is returned until `expires_at_ms`.
    Completed,
}

/// One idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// In progress or completed.
    pub status: Status,
    /// When the lease (in progress) or the stored result (completed) expires, in Unix ms.
    pub expires_at_ms: u64,
    /// Hex SHA-256 of the validated payload parts, when validation is configured.
    pub validation: Option<String>,
    /// The result as JSON (completed records only).
    pub result: Option<String>,
    /// Random token of the run that wrote the record, so two writes never compare equal.
    pub owner: String,
}

impl Record {
    /// Whether the record counts as absent at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// The record as stored by the on-disk and Redis stores.
    pub fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::new("encode", e))
    }

    /// Reads a record written by [`Record::to_json`].
    pub fn from_json(text: &str) -> Result<Self, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::new("decode", e))
    }
}

/// A store failed (I/O, network, corrupt record).
#[derive(Debug, thiserror::Error)]
#[error("idempotency store: {operation}: {source}")]
pub struct StoreError {
    operation: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// Wraps a store's own error with the operation that failed.
    pub fn new(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError {
            operation,
            source: source.into(),
        }
    }
}

/// Where records live. Every method is atomic with respect to the others on the same key.
pub trait Store: Send + Sync {
    /// Writes `record` under `key` if no record is there; returns whether it wrote.
    /// `ttl` is a hint for stores that collect garbage themselves (the record's own
    /// `expires_at_ms` is what counts).
    fn insert_if_absent(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// The record under `key`, expired or not.
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// If the record under `key` equals `expected`, replaces it with `new` (or removes it
    /// when `new` is `None`) and returns true; otherwise changes nothing and returns false.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: &Record,
        new: Option<(&Record, Duration)>,
    ) -> Result<bool, StoreError>;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn insert_if_absent(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        (**self).insert_if_absent(key, record, ttl)
    }

    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        (**self).get(key)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: &Record,
        new: Option<(&Record, Duration)>,
    ) -> Result<bool, StoreError> {
        (**self).compare_and_swap(key, expected, new)
    }
}

/// What to do when a chosen key part is missing from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Fail with [`IdempotencyError::MissingKeyPart`].
    #[default]
    Error,
    /// Log a warning and run the work without protection.
    Warn,
}

/// How keys are made and how long records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    key_parts: Vec<String>,
    validation_parts: Vec<String>,
    missing_key: MissingKey,
    expires_after: Duration,
    lease: Duration,
}

impl Default for IdempotencyConfig {
    /// Whole payload as the key, no validation, missing parts are errors, results kept one
    /// hour, in-progress leases of five minutes.
    fn default() -> Self {
        IdempotencyConfig {
            key_parts: Vec::new(),
            validation_parts: Vec::new(),
            missing_key: MissingKey::Error,
            expires_after: Duration::from_secs(3600),
            lease: Duration::from_secs(300),
        }
    }
}

impl IdempotencyConfig {
    /// Keys on the parts at these JSON pointers (RFC 6901, e.g. `/order/id`) instead of the
    /// whole payload. One pointer hashes that value; several hash the array of their values.
    pub fn with_key_parts<S: Into<String>>(
        mut self,
        pointers: impl IntoIterator<Item = S>,
    ) -> Self {
        self.key_parts = pointers.into_iter().map(Into::into).collect();
        self
    }

    /// Stores a hash of the parts at these JSON pointers and rejects a later call with the
    /// same key whose parts hash differently.
    pub fn with_validation_parts<S: Into<String>>(
        mut self,
        pointers: impl IntoIterator<Item = S>,
    ) -> Self {
        self.validation_parts = pointers.into_iter().map(Into::into).collect();
        self
    }

    /// What a missing key part means.
    pub fn with_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// How long a completed result is returned.
    pub fn with_expires_after(mut self, expires_after: Duration) -> Self {
        self.expires_after = expires_after;
        self
    }

    /// How long an in-progress record blocks the key before another run may take over; set
    /// it above the longest the work can take.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// Why a guarded call did not return a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError<E> {
    /// Another run holds the key and its lease has not ended.
    #[error("another run of `{key}` is in progress")]
    AlreadyInProgress {
        /// The key.
        key: String,
    },
    /// A completed record exists for the key, but the validated payload parts differ.
    #[error("payload of `{key}` differs from the one whose result is stored")]
    PayloadMismatch {
        /// The key.
        key: String,
    },
    /// A chosen key or validation part is missing from the payload.
    #[error("payload has no `{pointer}` to build the idempotency key from")]
    MissingKeyPart {
        /// The JSON pointer.
        pointer: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The result could not be written to or read from JSON.
    #[error("idempotency result: {0}")]
    Result(#[source] serde_json::Error),
    /// The work itself failed; the key was released so a retry can run.
    #[error("{0}")]
    Work(E),
}

/// How many times the conditional write is retried when records change under it.
const MAX_RACE_ROUNDS: usize = 8;

/// The guard: a store, a configuration, a clock and an optional cache.
pub struct Idempotency<S> {
    store: S,
    config: IdempotencyConfig,
    clock: Arc<dyn Clock>,
    cache: Option<Cache>,
    random: SystemRandom,
}

impl<S> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("cache", &self.cache.as_ref().map(|c| c.capacity))
            .finish_non_exhaustive()
    }
}

/// The outcome of trying to claim a key.
enum Claim {
    /// This call owns the key; the record it wrote.
    Owned(Record),
    /// A completed, unexpired record.
    Done(Record),
}

impl<S: Store> Idempotency<S> {
    /// A guard over `store` with the system clock and no cache.
    pub fn new(store: S, config: IdempotencyConfig) -> Self {
        Idempotency {
            store,
            config,
            clock: Arc::new(SystemClock),
            cache: None,
            random: SystemRandom::new(),
        }
    }

    /// Reads time from `clock` (tests pass a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps up to `capacity` completed records in process, sparing the store a read for
    /// repeats. In-progress records are never cached.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(Cache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        });
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The key for `payload` of `task`, or `None` when a key part is missing and the
    /// configuration says to run unprotected.
    pub fn key<E>(
        &self,
        task: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<String>, IdempotencyError<E>> {
        match key::select(payload, &self.config.key_parts) {
            Ok(part) => Ok(Some(format!("{task}#{}", hash_hex(&canonical_json(&part))))),
            Err(pointer) => match self.config.missing_key {
                MissingKey::Error => Err(IdempotencyError::MissingKeyPart { pointer }),
                MissingKey::Warn => {
                    tracing::warn!(
                        task,
                        pointer = pointer.as_str(),
                        "Idempotency key part missing; running without protection."
                    );
                    Ok(None)
                }
            },
        }
    }

    /// Runs `work` at most once for this `task` and `payload` (see the module docs) and
    /// returns its result, or the result stored by an earlier run.
    pub fn run<T, E, F>(
        &self,
        task: &str,
        payload: &serde_json::Value,
        work: F,
    ) -> Result<T, IdempotencyError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T, E>,
    {
        let Some(key) = self.key(task, payload)? else {
            return work().map_err(IdempotencyError::Work);
        };
        let validation = self.validation_hash(payload)?;

        if let Some(record) = self.cached(&key) {
            return self.stored_result(&key, &record, validation.as_deref());
        }
        let owned = match self.claim(&key, validation.as_deref())? {
            Claim::Done(record) => {
                self.remember(&key, &record);
                return self.stored_result(&key, &record, validation.as_deref());
            }
            Claim::Owned(record) => record,
        };

        match work() {
            Ok(value) => {
                let result = serde_json::to_string(&value).map_err(IdempotencyError::Result);
                let result = match result {
                    Ok(result) => result,
                    Err(error) => {
                        self.release(&key, &owned);
                        return Err(error);
                    }
                };
                let completed = Record {
                    status: Status::Completed,
                    expires_at_ms: self.deadline_ms(self.config.expires_after),
                    validation,
                    result: Some(result),
                    owner: owned.owner.clone(),
                };
                let swapped = self.store.compare_and_swap(
                    &key,
                    &owned,
                    Some((&completed, self.config.expires_after)),
                )?;
                if swapped {
                    self.remember(&key, &completed);
                } else {
                    tracing::warn!(
                        idempotency_key = key.as_str(),
                        "Idempotency lease was taken over before the work finished; result not stored."
                    );
                }
                Ok(value)
            }
            Err(error) => {
                self.release(&key, &owned);
                Err(IdempotencyError::Work(error))
            }
        }
    }

    /// Claims `key` with one conditional write, or finds who holds it.
    fn claim<E>(&self, key: &str, validation: Option<&str>) -> Result<Claim, IdempotencyError<E>> {
        let lease = self.config.lease;
        for _ in 0..MAX_RACE_ROUNDS {
            let mine = Record {
                status: Status::InProgress,
                expires_at_ms: self.deadline_ms(lease),
                validation: validation.map(str::to_string),
                result: None,
                owner: self.token()?,
            };
            if self.store.insert_if_absent(key, &mine, lease)? {
                return Ok(Claim::Owned(mine));
            }
            let Some(existing) = self.store.get(key)? else {
                continue; // removed in between: try the insert again
            };
            if existing.is_expired(unix_millis(self.clock.now())) {
                if self
                    .store
                    .compare_and_swap(key, &existing, Some((&mine, lease)))?
                {
                    if existing.status == Status::InProgress {
                        tracing::warn!(
                            idempotency_key = key,
                            "Took over an idempotency key whose lease had expired."
                        );
                    }
                    return Ok(Claim::Owned(mine));
                }
                continue; // someone else changed it first: look again
            }
            return match existing.status {
                Status::InProgress => Err(IdempotencyError::AlreadyInProgress {
                    key: key.to_string(),
                }),
                Status::Completed => Ok(Claim::Done(existing)),
            };
        }
        // Records kept changing under us: that is other runs working on the key.
        Err(IdempotencyError::AlreadyInProgress {
            key: key.to_string(),
        })
    }

    /// Removes our in-progress record after a failure, so a retry can run.
    fn release(&self, key: &str, owned: &Record) {
        if let Err(error) = self.store.compare_and_swap(key, owned, None) {
            tracing::warn!(
                idempotency_key = key,
                error = %error,
                "Could not release the idempotency key; it stays blocked until its lease ends."
            );
        }
    }

    fn stored_result<T, E>(
        &self,
        key: &str,
        record: &Record,
        validation: Option<&str>,
    ) -> Result<T, IdempotencyError<E>>
    where
        T: DeserializeOwned,
    {
        if let (Some(stored), Some(given)) = (record.validation.as_deref(), validation)
            && stored != given
        {
            return Err(IdempotencyError::PayloadMismatch {
                key: key.to_string(),
            });
        }
        tracing::info!(
            idempotency_key = key,
            "Already done; returning the stored result."
        );
        let result = record.result.as_deref().unwrap_or("null");
        serde_json::from_str(result).map_err(IdempotencyError::Result)
    }

    fn validation_hash<E>(
        &self,
        payload: &serde_json::Value,
    ) -> Result<Option<String>, IdempotencyError<E>> {
        if self.config.validation_parts.is_empty() {
            return Ok(None);
        }
        match key::select(payload, &self.config.validation_parts) {
            Ok(part) => Ok(Some(hash_hex(&canonical_json(&part)))),
            Err(pointer) => Err(IdempotencyError::MissingKeyPart { pointer }),
        }
    }

    fn deadline_ms(&self, after: Duration) -> u64 {
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        unix_millis(self.clock.now()).saturating_add(after_ms)
    }

    fn token<E>(&self) -> Result<String, IdempotencyError<E>> {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .map_err(|_| StoreError::new("generate owner token", "system random source failed"))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn cached(&self, key: &str) -> Option<Record> {
        let cache = self.cache.as_ref()?;
        let mut entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let record = entries.get(key)?.clone();
        if record.is_expired(unix_millis(self.clock.now())) {
            entries.remove(key);
            return None;
        }
        Some(record)
    }

    fn remember(&self, key: &str, record: &Record) {
        let Some(cache) = &self.cache else { return };
        if record.status != Status::Completed || cache.capacity == 0 {
            return;
        }
        let now_ms = unix_millis(self.clock.now());
        let mut entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= cache.capacity && !entries.contains_key(key) {
            entries.retain(|_, r| !r.is_expired(now_ms));
            if entries.len() >= cache.capacity {
                // Evict the record that expires first.
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, r)| r.expires_at_ms)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key.to_string(), record.clone());
    }
}

/// In-process copies of completed records.
struct Cache {
    capacity: usize,
    entries: Mutex<HashMap<String, Record>>,
}

/// A store's time-to-live hint in whole milliseconds, at least 1.
#[cfg(feature = "redis")]
pub(crate) fn ttl_hint_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests;
