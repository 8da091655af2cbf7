//! The SDK's spill directories: files of lines the task code could not hand to the agent
//! (see the contract in [`spoor_sdk::spill`]: `spill-<pid>-<start_nanos>-<seq>.log`, whole
//! lines, one file written at a time per process).
//!
//! Spill files are tailed by the file input ([`super::file`]) with `source=spill`, with
//! the same read positions, so a restart neither skips nor repeats a spilled line. What is
//! special:
//! - a partial last line is a write in progress and waits for its newline, however long,
//!   unless the file is *finished*: a later file of the same writer exists, or its
//!   process (`/proc/<pid>`) is gone;
//! - a finished file is removed once all its lines are **acknowledged by the collector**
//!   (not merely durable in the buffer): it was read to its end, its end position is in the
//!   `positions.json` checkpoint with the buffer record holding its last line, and every
//!   record up to that one is durably done in the buffer's ledger. A kill before the
//!   removal leaves the file; the restart resumes at its end and removes it then.

use std::path::Path;
use std::sync::{Arc, Mutex};

use spoor_sdk::spill::SpillFileName;

use super::positions::{FileKey, Positions};
use crate::buffer_handle::BufferHandle;

/// Whether the writer of `name` is done with it, given the spill files now in its folder.
pub(crate) fn is_finished(name: &SpillFileName, others: &[SpillFileName]) -> bool {
    others.iter().any(|o| name.is_superseded_by(o))
        || !Path::new(&format!("/proc/{}", name.pid)).exists()
}

/// What deciding on a spill file's removal needs to see.
#[derive(Debug, Clone)]
pub(crate) struct SpillCleanup {
    pub(crate) positions: Arc<Mutex<Positions>>,
    pub(crate) buffer: BufferHandle,
}

impl SpillCleanup {
    /// Whether every line of file `key` up to `offset` is acknowledged by the collector.
    pub(crate) fn acknowledged(&self, key: &FileKey, offset: u64) -> bool {
        if offset == 0 {
            return true;
        }
        let record = {
            let positions = self
                .positions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match positions.get(key) {
                Some(p) if p.offset == offset => p.record,
                _ => return false,
            }
        };
        self.buffer.blocking(|b| b.all_done_through(record))
    }

    /// Forgets the position of a removed file.
    pub(crate) fn forget(&self, key: &FileKey) {
        self.positions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .forget(key);
    }
}
