//! [`MemoryStore`]: idempotency records in a map behind a mutex, for one process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Record, Store, StoreError};

/// Records in process memory: guards one process's threads, lost when it exits. An expired
/// record stays until its key is used again, so memory grows with the number of keys.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn insert_if_absent(
        &self,
        key: &str,
        record: &Record,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.contains_key(key) {
            return Ok(false);
        }
        records.insert(key.to_string(), record.clone());
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(records.get(key).cloned())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: &Record,
        new: Option<(&Record, Duration)>,
    ) -> Result<bool, StoreError> {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.get(key) != Some(expected) {
            return Ok(false);
        }
        match new {
            Some((record, _ttl)) => records.insert(key.to_string(), record.clone()),
            None => records.remove(key),
        };
        Ok(true)
    }
}
