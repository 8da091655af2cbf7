//! Spill files: where the SDK puts lines it cannot hand to the agent right now (agent down,
//! in-memory queue full), so that the agent can pick them up later.
//!
//! # Contract with the agent (which reads these files)
//!
//! - **Directory.** `SPOOR_SPILL_DIR`, default `$TMPDIR/spoor-spill` ([`default_spill_dir`]).
//!   The SDK creates it with mode `0700`; files are created with mode `0600`.
//! - **Names.** `spill-<pid>-<start_nanos>-<seq>.log` ([`SpillFileName`]): `pid` is the
//!   writing process, `start_nanos` the Unix time in nanoseconds when its writer started
//!   (so a reused pid never collides), `seq` counts that writer's files from 0. All three
//!   are plain decimal. Any other name in the directory is not a spill file.
//! - **Content.** Complete logfmt lines, each ending in `\n`, appended with whole-line
//!   writes. A reader may see a partial last line only while a write is in progress: read
//!   up to the last `\n`, remember the offset, and come back for the rest.
//! - **One file per process at a time.** A writer appends to its newest file only. A file
//!   is *finished* when a file with a larger `seq` of the same `pid` and `start_nanos`
//!   exists, or when process `pid` no longer runs. Only a finished file may be deleted
//!   (after its lines are safe); deleting the file being written would lose what follows.
//! - **Caps.** A file is rotated (the next `seq` opened) before it would pass
//!   [`SpillConfig::file_max_bytes`]. When all spill files in the directory together
//!   would pass [`SpillConfig::dir_max_bytes`], lines are dropped and counted instead; the
//!   transport reports the count as a `msg="spoor dropped events" dropped=N` event ahead
//!   of the next line that gets through. Space the agent frees is seen again within a
//!   second.
//!
//! The writer is hand-written rather than `tracing-appender`'s rolling writer: that one
//! rotates by time, not size, has no cap on the directory, and its names do not carry the
//! pid, which the contract above needs to tell a finished file from a live one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File name prefix of every spill file.
pub const SPILL_PREFIX: &str = "spill-";
/// File name suffix of every spill file.
pub const SPILL_SUFFIX: &str = ".log";

/// How often the writer re-reads the directory size while it is over the cap.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// `$TMPDIR/spoor-spill`: where spill files go when `SPOOR_SPILL_DIR` is not set.
pub fn default_spill_dir() -> PathBuf {
    std::env::temp_dir().join("spoor-spill")
}

/// Where and how much to spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillConfig {
    /// The spill directory, created with mode `0700` when missing.
    pub dir: PathBuf,
    /// A file is rotated before it would grow past this many bytes. Default 8 MiB.
    pub file_max_bytes: u64,
    /// All spill files in the directory together stay under this many bytes; past it lines
    /// are dropped and counted. Default 256 MiB.
    pub dir_max_bytes: u64,
}

impl Default for SpillConfig {
    fn default() -> Self {
        SpillConfig {
            dir: default_spill_dir(),
            file_max_bytes: 8 * 1024 * 1024,
            dir_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The parts of a spill file's name: `spill-<pid>-<start_nanos>-<seq>.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpillFileName {
    /// The process that writes (or wrote) the file.
    pub pid: u32,
    /// Unix time in nanoseconds when that process's writer started.
    pub start_nanos: u128,
    /// The writer's file number, from 0.
    pub seq: u64,
}

impl SpillFileName {
    /// Reads a file name (not a path); `None` when it is not a spill file.
    pub fn parse(name: &str) -> Option<SpillFileName> {
        let rest = name
            .strip_prefix(SPILL_PREFIX)?
            .strip_suffix(SPILL_SUFFIX)?;
        let mut parts = rest.split('-');
        let (pid, start, seq) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(pid) && digits(start) && digits(seq)) {
            return None;
        }
        Some(SpillFileName {
            pid: pid.parse().ok()?,
            start_nanos: start.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Whether `other` is a later file of the same writer, which means `self` is finished.
    pub fn is_superseded_by(&self, other: &SpillFileName) -> bool {
        self.pid == other.pid && self.start_nanos == other.start_nanos && other.seq > self.seq
    }
}

impl std::fmt::Display for SpillFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{SPILL_PREFIX}{}-{}-{}{SPILL_SUFFIX}",
            self.pid, self.start_nanos, self.seq
        )
    }
}

/// Why lines could not be spilled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// The spill directory holds as many bytes as it may.
    #[error("spill directory {dir} is full ({bytes} bytes of {max})")]
    Full {
        /// The spill directory.
        dir: PathBuf,
        /// Bytes the spill files take now.
        bytes: u64,
        /// The cap.
        max: u64,
    },
    /// Creating the directory or writing a file failed.
    #[error("spilling to {path}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Appends whole lines to this process's spill files, rotating and capping them. Opens
/// nothing until the first line, so a process that never spills leaves no file behind.
#[derive(Debug)]
pub(crate) struct SpillWriter {
    config: SpillConfig,
    name: SpillFileName,
    file: Option<File>,
    file_bytes: u64,
    /// Bytes of all spill files in the directory, as last scanned plus what we wrote since.
    dir_bytes: u64,
    last_scan: Option<Instant>,
    lines_written: u64,
}

impl SpillWriter {
    pub(crate) fn new(config: SpillConfig) -> SpillWriter {
        let start_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        SpillWriter {
            config,
            name: SpillFileName {
                pid: std::process::id(),
                start_nanos,
                seq: 0,
            },
            file: None,
            file_bytes: 0,
            dir_bytes: 0,
            last_scan: None,
            lines_written: 0,
        }
    }

    /// Lines written to spill files so far.
    #[cfg(test)]
    pub(crate) fn lines_written(&self) -> u64 {
        self.lines_written
    }

    /// Appends one `\n`-terminated line.
    #[cfg(test)]
    pub(crate) fn write_line(&mut self, line: &[u8]) -> Result<(), SpillError> {
        self.write_chunk(line, 1)
    }

    /// Appends `\n`-terminated lines, as few writes as the caps allow. Returns how many of
    /// them were written before an error, with the error; the rest were not written.
    pub(crate) fn write_lines<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), (usize, SpillError)> {
        let mut chunk: Vec<u8> = Vec::new();
        let mut in_chunk = 0usize;
        let mut done = 0usize;
        for line in lines {
            let room = self.config.file_max_bytes.saturating_sub(self.file_bytes);
            if in_chunk > 0 && (chunk.len() + line.len()) as u64 > room.max(1) {
                self.write_chunk(&chunk, in_chunk as u64)
                    .map_err(|e| (done, e))?;
                done += in_chunk;
                chunk.clear();
                in_chunk = 0;
            }
            chunk.extend_from_slice(line);
            in_chunk += 1;
        }
        if in_chunk > 0 {
            self.write_chunk(&chunk, in_chunk as u64)
                .map_err(|e| (done, e))?;
        }
        Ok(())
    }

    fn write_chunk(&mut self, chunk: &[u8], lines: u64) -> Result<(), SpillError> {
        let len = chunk.len() as u64;
        if self.file.is_none() || self.file_bytes + len > self.config.file_max_bytes {
            // A chunk bigger than a whole file still goes into a fresh file of its own.
            if self.file.is_none() || self.file_bytes > 0 {
                self.open_next()?;
            }
        }
        if self.dir_bytes + len > self.config.dir_max_bytes {
            let stale = self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
            if stale {
                self.rescan()?;
            }
            if self.dir_bytes + len > self.config.dir_max_bytes {
                return Err(SpillError::Full {
                    dir: self.config.dir.clone(),
                    bytes: self.dir_bytes,
                    max: self.config.dir_max_bytes,
                });
            }
        }
        let path = self.path();
        let Some(file) = self.file.as_mut() else {
            return Err(SpillError::Io {
                path,
                source: io::Error::other("no spill file open"),
            });
        };
        if let Err(source) = file.write_all(chunk) {
            // Whatever part of the chunk landed is an incomplete line; start a fresh file
            // so the next line does not get glued to it.
            self.file = None;
            return Err(SpillError::Io { path, source });
        }
        self.file_bytes += len;
        self.dir_bytes += len;
        self.lines_written += lines;
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.config.dir.join(self.name.to_string())
    }

    fn open_next(&mut self) -> Result<(), SpillError> {
        if self.file.is_some() || self.last_scan.is_some() {
            self.name.seq += 1;
        }
        create_private_dir(&self.config.dir).map_err(|source| SpillError::Io {
            path: self.config.dir.clone(),
            source,
        })?;
        let path = self.path();
        let mut options = OpenOptions::new();
        options.append(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|source| SpillError::Io { path, source })?;
        self.file = Some(file);
        self.file_bytes = 0;
        self.rescan()?;
        Ok(())
    }

    /// Re-reads how many bytes the spill files in the directory take.
    fn rescan(&mut self) -> Result<(), SpillError> {
        let dir = &self.config.dir;
        let entries = std::fs::read_dir(dir).map_err(|source| SpillError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut total = 0;
        for entry in entries.flatten() {
            let is_spill = entry
                .file_name()
                .to_str()
                .and_then(SpillFileName::parse)
                .is_some();
            if is_spill {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        self.dir_bytes = total;
        self.last_scan = Some(Instant::now());
        Ok(())
    }
}

/// Creates `dir` (and its parents) with mode `0700` for the last component.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, file_max: u64, dir_max: u64) -> SpillWriter {
        SpillWriter::new(SpillConfig {
            dir: dir.join("spill"),
            file_max_bytes: file_max,
            dir_max_bytes: dir_max,
        })
    }

    fn files(dir: &Path) -> Vec<(SpillFileName, String)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .expect("spill dir")
            .map(|e| e.expect("entry"))
            .map(|e| {
                let name = SpillFileName::parse(e.file_name().to_str().expect("utf-8"))
                    .expect("only spill files");
                (name, std::fs::read_to_string(e.path()).expect("read"))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let name = SpillFileName {
            pid: 42,
            start_nanos: 1_700_000_000_123_456_789,
            seq: 3,
        };
        assert_eq!(name.to_string(), "spill-42-1700000000123456789-3.log");
        assert_eq!(SpillFileName::parse(&name.to_string()), Some(name));
        for bad in [
            "spill-1-2.log",
            "spill-1-2-3-4.log",
            "spill-a-2-3.log",
            "spill-1-2-3.txt",
            "x",
        ] {
            assert_eq!(SpillFileName::parse(bad), None, "{bad}");
        }
        let next = SpillFileName { seq: 4, ..name };
        assert!(name.is_superseded_by(&next));
        assert!(!next.is_superseded_by(&name));
    }

    #[test]
    fn nothing_is_created_until_the_first_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _w = writer(tmp.path(), 1024, 4096);
        assert!(!tmp.path().join("spill").exists());
    }

    #[test]
    fn rotates_by_size_and_keeps_whole_lines() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = writer(tmp.path(), 30, 10_000);
        let lines: Vec<String> = (0..10).map(|i| format!("msg=line-{i}\n")).collect();
        w.write_lines(lines.iter().map(|l| l.as_bytes()))
            .expect("spill");
        let files = files(&tmp.path().join("spill"));
        assert!(files.len() > 1, "rotated: {files:?}");
        for (i, (name, text)) in files.iter().enumerate() {
            assert_eq!(name.seq, i as u64);
            assert_eq!(name.pid, std::process::id());
            assert!(text.len() <= 30, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'));
        }
        let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(all, lines.concat());
        assert_eq!(w.lines_written(), 10);
    }

    #[cfg(unix)]
    #[test]
    fn directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = writer(tmp.path(), 1024, 4096);
        w.write_line(b"msg=x\n").expect("spill");
        let dir_mode = std::fs::metadata(tmp.path().join("spill"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let (name, _) = files(&tmp.path().join("spill")).remove(0);
        let path = tmp.path().join("spill").join(name.to_string());
        let file_mode = std::fs::metadata(path).expect("file").permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
    }

    #[test]
    fn a_full_directory_refuses_and_recovers_when_space_is_freed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = writer(tmp.path(), 20, 40);
        let line = b"msg=0123456789abcd\n"; // 19 bytes
        w.write_line(line).expect("first");
        w.write_line(line).expect("second, in a new file");
        let err = w.write_line(line).expect_err("over the directory cap");
        assert!(matches!(err, SpillError::Full { .. }), "{err}");
        // The agent picks up the finished file and deletes it.
        let spill = tmp.path().join("spill");
        let (first, _) = files(&spill).remove(0);
        std::fs::remove_file(spill.join(first.to_string())).expect("agent deletes");
        w.last_scan = None; // as if a second had passed
        w.write_line(line).expect("room again");
        assert_eq!(w.lines_written(), 3);
    }
}
