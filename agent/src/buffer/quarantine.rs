//! Quarantine: segments the buffer cannot open (sealed with a key that is not configured)
//! are moved aside into `DIR/buffer/quarantine/` instead of stopping the agent, so nothing
//! is deleted and everything else is delivered.
//!
//! Each quarantined `segment-N.buf` gets a note `segment-N.buf.json`,
//! `{"version":1,"key_id":"<hex>","pending":[ids]}`, naming the key it needs and the
//! records that were not yet done (acknowledged) when it was moved; the buffer's ledger
//! then forgets those IDs (record IDs are never reused: the buffer's next ID stays above
//! them). The note is written and fsynced before the segment is renamed, so a crash in
//! between only quarantines the segment again on the next start.
//!
//! Recovery is automatic: on every open, a quarantined segment whose key is now
//! configured (current or in `old_key_files`) has its pending records read, checked and
//! appended to the buffer again as new records (new IDs, so new idempotency keys), which
//! are fsynced before the quarantined file and its note are deleted. A record that fails
//! authentication there is reported with its segment and offset and skipped. A crash
//! between that fsync and the deletion sends the restored batches a second time.
//!
//! A live segment in which a record fails authentication when it is handed out (altered
//! bytes) is copied here once as `segment-N.buf.damaged`, since the segment itself is
//! deleted when its other records are acknowledged. Those copies are for investigation
//! only and are never restored.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::BufferError;
use super::ledger::sync_dir;

/// Folder of quarantined segments inside the buffer's folder.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The note beside a quarantined segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Note {
    pub(crate) version: u32,
    /// The key the segment needs, in hex.
    pub(crate) key_id: String,
    /// Records not done when the segment was moved.
    pub(crate) pending: Vec<u64>,
}

/// A segment waiting in quarantine.
#[derive(Debug, Clone)]
pub(crate) struct Quarantined {
    pub(crate) path: PathBuf,
    /// The records to restore; `None` (no readable note) means all of them.
    pub(crate) pending: Option<Vec<u64>>,
}

fn note_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Moves `segment` (in `buffer_dir`) into quarantine with its note; returns where it went.
pub(crate) fn quarantine(
    buffer_dir: &Path,
    segment: &Path,
    note: &Note,
) -> Result<PathBuf, BufferError> {
    let qdir = buffer_dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(|e| BufferError::io(&qdir, e))?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "segment.buf".into());
    // Sequence numbers restart above the live segments only, so a name may repeat.
    let mut target = qdir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = qdir.join(format!("{n}-{name}"));
        n += 1;
    }
    let note_file = note_path(&target);
    let tmp = note_file.with_extension("json.tmp");
    let bytes = serde_json::to_vec(note).map_err(|e| BufferError::Io {
        path: note_file.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut f = fs::File::create(&tmp).map_err(|e| BufferError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BufferError::io(&tmp, e))?;
    fs::rename(&tmp, &note_file).map_err(|e| BufferError::io(&note_file, e))?;
    sync_dir(&qdir)?;
    fs::rename(segment, &target).map_err(|e| BufferError::io(segment, e))?;
    sync_dir(&qdir)?;
    sync_dir(buffer_dir)?;
    Ok(target)
}

/// The quarantined segments, oldest name first. A segment without a readable note is
/// listed with every record pending.
pub(crate) fn list(buffer_dir: &Path) -> Result<Vec<Quarantined>, BufferError> {
    let qdir = buffer_dir.join(QUARANTINE_DIR);
    let entries = match fs::read_dir(&qdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BufferError::io(&qdir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BufferError::io(&qdir, e))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "buf") {
            continue;
        }
        let pending = fs::read(note_path(&path))
            .ok()
            .and_then(|b| serde_json::from_slice::<Note>(&b).ok())
            .map(|n| n.pending);
        out.push(Quarantined { path, pending });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Deletes a quarantined segment and its note (after its records were restored).
pub(crate) fn remove(buffer_dir: &Path, q: &Quarantined) -> Result<(), BufferError> {
    fs::remove_file(&q.path).map_err(|e| BufferError::io(&q.path, e))?;
    let note = note_path(&q.path);
    match fs::remove_file(&note) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BufferError::io(&note, e)),
    }
    sync_dir(&buffer_dir.join(QUARANTINE_DIR))
}

/// Copies `segment` into quarantine as `NAME.damaged` unless a copy exists; returns the
/// copy's path when one was made now.
pub(crate) fn keep_damaged_copy(
    buffer_dir: &Path,
    segment: &Path,
) -> Result<Option<PathBuf>, BufferError> {
    let qdir = buffer_dir.join(QUARANTINE_DIR);
    let Some(name) = segment.file_name() else {
        return Ok(None);
    };
    let mut copy_name = name.to_owned();
    copy_name.push(".damaged");
    let copy = qdir.join(copy_name);
    if copy.exists() {
        return Ok(None);
    }
    fs::create_dir_all(&qdir).map_err(|e| BufferError::io(&qdir, e))?;
    fs::copy(segment, &copy).map_err(|e| BufferError::io(&copy, e))?;
    Ok(Some(copy))
}
