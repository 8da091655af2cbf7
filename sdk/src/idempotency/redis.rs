//! [`RedisStore`]: idempotency records in Redis, for runs on many hosts.
//!
//! The claim is `SET key record NX PX ttl`; compare-and-set (taking over an expired record,
//! completing or releasing one's own) is a Lua script that compares the stored text with
//! the record the caller read and replaces or deletes it, atomically on the server.
//! Records are JSON; Redis's own expiry (`PX`) only collects garbage, the record's
//! `expires_at_ms` decides.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Record, Store, StoreError, ttl_hint_ms};

/// Replaces (or with an empty ARGV[2], deletes) KEYS[1] if it holds exactly ARGV[1].
const COMPARE_AND_SWAP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// The default prefix of the Redis keys.
pub const DEFAULT_PREFIX: &str = "spoor:idempotency:";

/// Records in Redis, under `prefix + key`.
pub struct RedisStore {
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
    script: redis::Script,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        let info = self.client.get_connection_info();
        f.debug_struct("RedisStore")
            .field("addr", &info.addr())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://host:port/db`), with keys under
    /// [`DEFAULT_PREFIX`].
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::new("connect", e))?;
        let connection = client
            .get_connection()
            .map_err(|e| StoreError::new("connect", e))?;
        Ok(RedisStore {
            client,
            connection: Mutex::new(Some(connection)),
            script: redis::Script::new(COMPARE_AND_SWAP),
            prefix: DEFAULT_PREFIX.to_string(),
        })
    }

    /// Puts the keys under `prefix` instead of [`DEFAULT_PREFIX`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Runs `f` on the connection, reconnecting first if an earlier call broke it.
    fn with_connection<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut redis::Connection, &str) -> redis::RedisResult<T>,
        key: &str,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(
                self.client
                    .get_connection()
                    .map_err(|e| StoreError::new(operation, e))?,
            ),
        };
        let full_key = format!("{}{key}", self.prefix);
        match f(connection, &full_key) {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_io_error() || error.is_connection_dropped() {
                    *slot = None;
                }
                Err(StoreError::new(operation, error))
            }
        }
    }
}

impl Store for RedisStore {
    fn insert_if_absent(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let json = record.to_json()?;
        let reply: Option<String> = self.with_connection(
            "SET NX",
            |connection, key| {
                redis::cmd("SET")
                    .arg(key)
                    .arg(&json)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_hint_ms(ttl))
                    .query(connection)
            },
            key,
        )?;
        Ok(reply.is_some())
    }

    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let reply: Option<String> = self.with_connection(
            "GET",
            |connection, key| redis::cmd("GET").arg(key).query(connection),
            key,
        )?;
        reply.as_deref().map(Record::from_json).transpose()
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: &Record,
        new: Option<(&Record, Duration)>,
    ) -> Result<bool, StoreError> {
        let expected = expected.to_json()?;
        let (new, ttl_ms) = match new {
            Some((record, ttl)) => (record.to_json()?, ttl_hint_ms(ttl)),
            None => (String::new(), 1),
        };
        let swapped: i64 = self.with_connection(
            "compare-and-swap",
            |connection, key| {
                self.script
                    .key(key)
                    .arg(&expected)
                    .arg(&new)
                    .arg(ttl_ms)
                    .invoke(connection)
            },
            key,
        )?;
        Ok(swapped == 1)
    }
}
