//! [`RedbStore`]: idempotency records in a `redb` file, for the runs of one host.
//!
//! Each operation is one redb write transaction (redb allows one writer at a time), so the
//! conditional writes are atomic among the threads sharing the store. redb locks the file:
//! one process opens it, and its threads share the [`RedbStore`] (it is `Sync`).
//! Records are stored as JSON under their key; an expired record stays until its key is
//! used again.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};

use super::{Record, Store, StoreError};

const RECORDS: TableDefinition<&str, &str> = TableDefinition::new("idempotency_records");

/// Records in a redb database file.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

fn fail(operation: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |error| StoreError::new(operation, error)
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its table) when missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| StoreError::new("open", format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(|e| fail("open")(e.into()))?;
        txn.open_table(RECORDS)
            .map_err(|e| fail("open")(e.into()))?;
        txn.commit().map_err(|e| fail("open")(e.into()))?;
        Ok(RedbStore { db })
    }

    /// Runs `f` on the table in one write transaction and commits when it returns `Ok(true)`.
    fn write(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut redb::Table<'_, &str, &str>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| fail(operation)(e.into()))?;
        let changed = {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(|e| fail(operation)(e.into()))?;
            f(&mut table)?
        };
        if changed {
            txn.commit().map_err(|e| fail(operation)(e.into()))?;
        } else {
            txn.abort().map_err(|e| fail(operation)(e.into()))?;
        }
        Ok(changed)
    }
}

fn read(
    table: &impl ReadableTable<&'static str, &'static str>,
    key: &str,
) -> Result<Option<Record>, StoreError> {
    let value = table.get(key).map_err(|e| fail("read")(e.into()))?;
    value.map(|v| Record::from_json(v.value())).transpose()
}

impl Store for RedbStore {
    fn insert_if_absent(
        &self,
        key: &str,
        record: &Record,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        let json = record.to_json()?;
        self.write("insert", |table| {
            if table
                .get(key)
                .map_err(|e| fail("insert")(e.into()))?
                .is_some()
            {
                return Ok(false);
            }
            table
                .insert(key, json.as_str())
                .map_err(|e| fail("insert")(e.into()))?;
            Ok(true)
        })
    }

    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| fail("read")(e.into()))?;
        let table = txn
            .open_table(RECORDS)
            .map_err(|e| fail("read")(e.into()))?;
        read(&table, key)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: &Record,
        new: Option<(&Record, Duration)>,
    ) -> Result<bool, StoreError> {
        let json = new.map(|(record, _)| record.to_json()).transpose()?;
        self.write("compare-and-swap", |table| {
            if read(table, key)?.as_ref() != Some(expected) {
                return Ok(false);
            }
            match &json {
                Some(json) => {
                    table
                        .insert(key, json.as_str())
                        .map_err(|e| fail("write")(e.into()))?;
                }
                None => {
                    table.remove(key).map_err(|e| fail("remove")(e.into()))?;
                }
            }
            Ok(true)
        })
    }
}
