//! Writing the active segment: appends go to the file at once (write(2)), fsync follows
//! at most every fsync interval (group commit), and every failure is rolled back so the
//! file never keeps a partial record.
//!
//! The writer keeps the frames written since the last successful fsync in memory
//! (`pending`, at most one segment's worth, because rotating a segment fsyncs it). A write
//! error trims the file back to the last complete frame; an fsync error cannot trust the
//! page cache any more, so the file is cut back to the last durable end and the pending
//! frames are written again. Until that repair succeeds every write and sync fails, so the
//! file is always "durable prefix + complete pending frames" or gets repaired first.
//!
//! File access goes through [`SegmentIo`] so tests can inject ENOSPC.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::BufferError;
use super::ledger::sync_dir;
use super::record::{HEADER_LEN, SegmentHeader};

/// One open segment file, positioned at its end.
pub(crate) trait SegmentFile: Send {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and positions the next write there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Opens segment files for writing.
pub(crate) trait SegmentIo: Send + Sync {
    /// Creates (or truncates) a file.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file for writing at offset `len`.
    fn open_at(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct StdIo;

impl SegmentFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(drop)
    }
}

impl SegmentIo for StdIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(f))
    }

    fn open_at(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(len))?;
        Ok(Box::new(f))
    }
}

/// What must happen before the file can be written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// A write failed: bytes past `written_end` may be a partial frame.
    Trim,
    /// An fsync failed: only `durable_end` is trusted; rewrite `pending` after it.
    Rewrite,
}

/// Appends frames to the active segment.
pub(crate) struct SegmentWriter {
    file: Box<dyn SegmentFile>,
    path: PathBuf,
    /// End of the last complete frame written.
    written_end: u64,
    /// End of the data known to be fsynced.
    durable_end: u64,
    /// The bytes between `durable_end` and `written_end`.
    pending: Vec<u8>,
    /// When the oldest pending frame was written.
    pending_since: Option<Instant>,
    repair: Option<Repair>,
}

impl SegmentWriter {
    /// Creates a segment crash-safely: header into `<path>.tmp`, fsync, rename, fsync the
    /// directory. A crash leaves either no segment or a complete header.
    pub(crate) fn create(
        io: &dyn SegmentIo,
        path: &Path,
        header: &SegmentHeader,
    ) -> Result<SegmentWriter, BufferError> {
        let tmp = path.with_extension("buf.tmp");
        let result = (|| {
            let mut file = io.create(&tmp).map_err(|e| BufferError::io(&tmp, e))?;
            file.write_all(&header.encode())
                .and_then(|()| file.sync_data())
                .map_err(|e| BufferError::io(&tmp, e))?;
            fs::rename(&tmp, path).map_err(|e| BufferError::io(path, e))?;
            Ok(file)
        })();
        let file = match result {
            Ok(file) => file,
            Err(e) => {
                // Best effort; open removes stray temp files too.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            written_end: HEADER_LEN,
            durable_end: HEADER_LEN,
            pending: Vec::new(),
            pending_since: None,
            repair: None,
        })
    }

    /// Continues an existing segment whose first `len` bytes are valid and fsynced.
    pub(crate) fn resume(
        io: &dyn SegmentIo,
        path: &Path,
        len: u64,
    ) -> Result<SegmentWriter, BufferError> {
        let file = io
            .open_at(path, len)
            .map_err(|e| BufferError::io(path, e))?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            written_end: len,
            durable_end: len,
            pending: Vec::new(),
            pending_since: None,
            repair: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn written_end(&self) -> u64 {
        self.written_end
    }

    pub(crate) fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    /// Whether an fsync is owed (unsynced frames, or a failure to repair).
    pub(crate) fn needs_sync(&self) -> bool {
        self.pending_since.is_some() || self.repair.is_some()
    }

    /// Brings the file back to "durable prefix + pending frames" after a failure.
    fn repair(&mut self) -> io::Result<()> {
        match self.repair {
            None => Ok(()),
            Some(Repair::Trim) => {
                self.file.truncate(self.written_end)?;
                self.repair = None;
                Ok(())
            }
            Some(Repair::Rewrite) => {
                self.file.truncate(self.durable_end)?;
                self.file.write_all(&self.pending)?;
                self.written_end = self.durable_end + self.pending.len() as u64;
                self.repair = None;
                Ok(())
            }
        }
    }

    /// Writes one complete frame; with `sync`, also fsyncs. On error the frame is not in
    /// the file (or will be removed before the next write), and the error is returned.
    pub(crate) fn append(&mut self, frame: &[u8], sync: bool) -> io::Result<()> {
        self.repair()?;
        if let Err(e) = self.file.write_all(frame) {
            self.repair = Some(Repair::Trim);
            let _ = self.repair();
            return Err(e);
        }
        self.written_end += frame.len() as u64;
        self.pending.extend_from_slice(frame);
        self.pending_since.get_or_insert_with(Instant::now);
        if sync {
            if let Err(e) = self.file.sync_data() {
                // The caller is told this append failed, so it must not survive: forget it
                // and cut the file back to the durable end plus the older pending frames.
                self.pending.truncate(self.pending.len() - frame.len());
                self.written_end -= frame.len() as u64;
                if self.pending.is_empty() {
                    self.pending_since = None;
                }
                self.repair = Some(Repair::Rewrite);
                let _ = self.repair();
                return Err(e);
            }
            self.mark_durable();
        }
        Ok(())
    }

    /// Fsyncs everything written. Returns whether anything was synced.
    pub(crate) fn sync(&mut self) -> io::Result<bool> {
        self.repair()?;
        if self.pending_since.is_none() {
            return Ok(false);
        }
        if let Err(e) = self.file.sync_data() {
            self.repair = Some(Repair::Rewrite);
            let _ = self.repair();
            return Err(e);
        }
        self.mark_durable();
        Ok(true)
    }

    fn mark_durable(&mut self) {
        self.durable_end = self.written_end;
        self.pending.clear();
        self.pending_since = None;
    }
}
