//! The ledger: which record IDs are done (acknowledged by the collector, or dropped on
//! purpose), kept in `DIR/buffer/ledger.json` and replaced atomically (write a temp file,
//! fsync it, rename it over the old one, fsync the directory).
//!
//! It is stored compactly as a low-water mark plus the sparse set above it:
//! `{"version":1,"done_through":41,"acked":[43,47]}` means every ID up to 41 is done, and
//! so are 43 and 47. The mark only ever rises. A crash before the rename leaves the old
//! ledger in place (the temp file is deleted on open), so the acks in flight are simply
//! delivered again, which the collector answers as duplicates.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::BufferError;

pub(crate) const LEDGER_FILE: &str = "ledger.json";
const LEDGER_TMP: &str = "ledger.json.tmp";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    version: u32,
    done_through: u64,
    acked: Vec<u64>,
}

/// The in-memory ledger and where it is stored.
#[derive(Debug)]
pub(crate) struct Ledger {
    path: PathBuf,
    tmp_path: PathBuf,
    /// Every ID up to and including this one is done.
    done_through: u64,
    /// Done IDs above `done_through`.
    acked: BTreeSet<u64>,
    /// Whether memory holds changes the file does not.
    dirty: bool,
}

impl Ledger {
    /// Loads the ledger from `dir`, deleting a temp file left by a crash. A missing file
    /// is an empty ledger. An unreadable one is moved aside with a warning and treated as
    /// empty: that only re-delivers acknowledged batches, which the collector deduplicates.
    pub(crate) fn load(dir: &Path) -> Result<Ledger, BufferError> {
        let path = dir.join(LEDGER_FILE);
        let tmp_path = dir.join(LEDGER_TMP);
        match fs::remove_file(&tmp_path) {
            Ok(()) => tracing::warn!(
                path = %tmp_path.display(),
                "Removed a ledger temp file left by an interrupted update."
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BufferError::io(&tmp_path, e)),
        }
        let mut ledger = Ledger {
            path,
            tmp_path,
            done_through: 0,
            acked: BTreeSet::new(),
            dirty: false,
        };
        let bytes = match fs::read(&ledger.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ledger),
            Err(e) => return Err(BufferError::io(&ledger.path, e)),
        };
        match serde_json::from_slice::<LedgerFile>(&bytes) {
            Ok(file) if file.version == 1 => {
                ledger.done_through = file.done_through;
                ledger.acked = file
                    .acked
                    .into_iter()
                    .filter(|&id| id > file.done_through)
                    .collect();
            }
            parsed => {
                let aside = ledger.path.with_extension("json.corrupt");
                let reason = match parsed {
                    Ok(file) => format!("unknown version {}", file.version),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    path = %ledger.path.display(),
                    moved_to = %aside.display(),
                    reason,
                    "Ledger unreadable; moved aside, unacknowledged state starts empty and acknowledged batches will be sent again."
                );
                fs::rename(&ledger.path, &aside).map_err(|e| BufferError::io(&ledger.path, e))?;
                ledger.dirty = true;
            }
        }
        Ok(ledger)
    }

    pub(crate) fn is_done(&self, id: u64) -> bool {
        id <= self.done_through || self.acked.contains(&id)
    }

    /// Marks one ID done in memory (persisted by [`Ledger::store`]).
    pub(crate) fn mark(&mut self, id: u64) {
        if !self.is_done(id) {
            self.acked.insert(id);
            self.dirty = true;
        }
    }

    /// Raises the low-water mark to `through` (never lowers it) and forgets the sparse
    /// IDs it now covers.
    pub(crate) fn raise_to(&mut self, through: u64) {
        if through > self.done_through {
            self.done_through = through;
            self.acked = self.acked.split_off(&(through + 1));
            self.dirty = true;
        }
    }

    /// The highest ID the ledger knows of (so IDs are never reused below it).
    pub(crate) fn highest(&self) -> u64 {
        self.acked
            .last()
            .copied()
            .unwrap_or(0)
            .max(self.done_through)
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn done_through(&self) -> u64 {
        self.done_through
    }

    #[cfg(test)]
    pub(crate) fn sparse_len(&self) -> usize {
        self.acked.len()
    }

    /// Writes the ledger atomically if it changed. When this returns, the state is durable.
    pub(crate) fn store(&mut self) -> Result<(), BufferError> {
        if !self.dirty {
            return Ok(());
        }
        let file = LedgerFile {
            version: 1,
            done_through: self.done_through,
            acked: self.acked.iter().copied().collect(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| BufferError::io(&self.path, std::io::Error::other(e)))?;
        write_atomically(&self.tmp_path, &self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), BufferError> {
    let result = (|| {
        let mut f = File::create(tmp).map_err(|e| BufferError::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| BufferError::io(tmp, e))?;
        f.sync_all().map_err(|e| BufferError::io(tmp, e))?;
        fs::rename(tmp, path).map_err(|e| BufferError::io(path, e))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is removed on the next open anyway.
        let _ = fs::remove_file(tmp);
    }
    result?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes renames, creations and unlinks in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BufferError::io(dir, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;

    #[test]
    fn store_and_load_round_trip_compactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::load(dir.path()).unwrap();
        for id in [1, 2, 3, 5, 9] {
            ledger.mark(id);
        }
        ledger.raise_to(3);
        ledger.store().unwrap();
        let text = fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text, r#"{"version":1,"done_through":3,"acked":[5,9]}"#);
        let again = Ledger::load(dir.path()).unwrap();
        assert!((1..=3).all(|id| again.is_done(id)));
        assert!(!again.is_done(4) && again.is_done(5) && !again.is_done(6) && again.is_done(9));
        assert_eq!(again.highest(), 9);
    }

    #[test]
    fn crash_before_rename_keeps_old_ledger_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::load(dir.path()).unwrap();
        ledger.mark(1);
        ledger.store().unwrap();
        // The next update wrote its temp file, then the process died before the rename.
        fs::write(
            dir.path().join(LEDGER_TMP),
            br#"{"version":1,"done_through":7,"acked":[]}"#,
        )
        .unwrap();
        let again = Ledger::load(dir.path()).unwrap();
        assert!(again.is_done(1) && !again.is_done(2));
        assert!(!dir.path().join(LEDGER_TMP).exists());
    }

    #[test]
    fn unreadable_ledger_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LEDGER_FILE), b"{not json").unwrap();
        let mut ledger = Ledger::load(dir.path()).unwrap();
        assert!(!ledger.is_done(1));
        assert!(dir.path().join("ledger.json.corrupt").exists());
        ledger.store().unwrap();
        assert!(dir.path().join(LEDGER_FILE).exists());
    }
}
