//! Read positions of tailed files, persisted in `DATA_DIR/positions.json`.
//!
//! A file is known by its device and inode (so a renamed file keeps its position) plus a
//! fingerprint: the CRC32 of its first bytes (up to 256), so an inode reused by a new file
//! is not mistaken for the old one. The batcher records a position only after every line
//! before it is durable in the disk buffer, and the file is replaced atomically (temporary
//! file, fsync, rename, fsync of the directory): after a restart, reading resumes exactly
//! after the last line that is safe in the buffer, so lines are neither skipped nor
//! repeated (a kill -9 between the buffer's fsync and this write can repeat the lines of
//! that window; never skip).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::identity::write_atomically;

/// File name inside the data directory.
pub const POSITIONS_FILE: &str = "positions.json";

/// Most bytes covered by a fingerprint.
pub(crate) const FINGERPRINT_BYTES: u64 = 256;

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl FileKey {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Where to resume reading one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    pub(crate) key: FileKey,
    /// The path the file was found under (for people reading the file).
    pub(crate) path: PathBuf,
    /// Bytes consumed: reading resumes here.
    pub(crate) offset: u64,
    /// How many leading bytes the fingerprint covers.
    pub(crate) fp_len: u64,
    /// CRC32 of those bytes.
    pub(crate) fp_crc: u32,
}

/// CRC32 of the first `len` bytes of `file`, or `None` when it has fewer.
pub(crate) fn fingerprint(file: &File, len: u64) -> std::io::Result<Option<u32>> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64)? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    Ok(Some(crc32fast::hash(&buf)))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<FilePosition>,
}

/// The positions of all files, as last persisted.
#[derive(Debug)]
pub(crate) struct Positions {
    path: PathBuf,
    files: HashMap<FileKey, FilePosition>,
}

impl Positions {
    /// Loads `data_dir/positions.json` (empty when absent).
    pub(crate) fn load(data_dir: &Path) -> Result<Self, AgentError> {
        let path = data_dir.join(POSITIONS_FILE);
        let files = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| AgentError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })?;
                stored.files.into_iter().map(|p| (p.key, p)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(AgentError::Io { path, source }),
        };
        Ok(Positions { path, files })
    }

    /// A copy of every position, for the file input to resume from.
    pub(crate) fn snapshot(&self) -> HashMap<FileKey, FilePosition> {
        self.files.clone()
    }

    /// Records newer positions (each must already be durable in the buffer) and persists.
    pub(crate) fn commit(
        &mut self,
        updates: impl IntoIterator<Item = FilePosition>,
    ) -> Result<(), AgentError> {
        let mut changed = false;
        for p in updates {
            if self.files.get(&p.key) != Some(&p) {
                self.files.insert(p.key, p);
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let mut files: Vec<_> = self.files.values().cloned().collect();
        files.sort_by_key(|p| (p.key.dev, p.key.ino));
        let stored = Stored { version: 1, files };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| AgentError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&self.path, &json).map_err(|source| AgentError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Whether `file` is the file `pos` describes and can resume at `pos.offset`.
pub(crate) fn resumable(file: &File, len: u64, pos: &FilePosition) -> bool {
    len >= pos.offset
        && (pos.fp_len == 0
            || matches!(fingerprint(file, pos.fp_len), Ok(Some(crc)) if crc == pos.fp_crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_persists_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Positions::load(dir.path()).expect("empty");
        let pos = FilePosition {
            key: FileKey { dev: 1, ino: 2 },
            path: "/x".into(),
            offset: 10,
            fp_len: 5,
            fp_crc: 7,
        };
        p.commit([pos.clone()]).expect("commit");
        let again = Positions::load(dir.path()).expect("load");
        assert_eq!(again.snapshot().get(&pos.key), Some(&pos));
    }

    #[test]
    fn fingerprint_guards_inode_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world\n").expect("write");
        let file = File::open(&path).expect("open");
        let crc = fingerprint(&file, 5).expect("read").expect("long enough");
        let pos = FilePosition {
            key: FileKey { dev: 0, ino: 0 },
            path: path.clone(),
            offset: 12,
            fp_len: 5,
            fp_crc: crc,
        };
        assert!(resumable(&file, 12, &pos));
        std::fs::write(&path, b"HELLO world\n").expect("write");
        let file = File::open(&path).expect("open");
        assert!(!resumable(&file, 12, &pos));
    }
}
