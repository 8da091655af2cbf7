//! Tailing files that match glob patterns.
//!
//! One OS thread polls: it lists the patterns' directories every 250 ms (new files are
//! picked up while running) and reads every open file every 100 ms with positional reads.
//! Files are tracked by device and inode, so:
//! - **rename rotation**: the renamed file keeps being read to its end; once it no longer
//!   matches a pattern and has been idle for the partial-line timeout, it is closed. The new
//!   file under the old name is a new inode and is read from its start.
//! - **truncation**: a file shorter than the read offset is read again from 0.
//! - a **partial last line** waits for its newline, and is sent as it is after 1 s without
//!   new data; `\r\n` endings are handled by the decoder.
//!
//! Every line carries the offset just after it ([`FilePosition`]), so whichever line ends a
//! batch, the batch's record carries the positions of all its lines; they are checkpointed
//! only once the line is durable in the disk buffer ([`super::positions`]). On start, a file
//! whose inode and fingerprint match a stored position resumes there; any other file is read
//! from its start (nothing is skipped, including files that existed before the first start).
//!
//! Patterns are matched here rather than with the `glob` crate: only the file name may hold
//! `*` and `?` (log directories are literal), which takes 30 lines and one `read_dir` per
//! directory per scan, instead of a dependency that walks whole trees.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use spoor_sdk::spill::{SPILL_PREFIX, SPILL_SUFFIX, SpillFileName};

use super::InputLine;
use super::lines::LineSplitter;
use super::positions::{FINGERPRINT_BYTES, FileKey, FilePosition, fingerprint, resumable};
use super::spill::SpillCleanup;
use crate::enrich::Enricher;
use crate::metrics::{InputKind, Metrics, inc};

/// A file pattern: a literal directory and a file name with `*` and `?` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GlobPattern {
    dir: PathBuf,
    name: Vec<u8>,
    /// The SDK's spill files in `dir` ([`super::spill`]).
    spill: bool,
}

impl GlobPattern {
    /// Parses `pattern`; wildcards are only allowed in the file name.
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("`{pattern}` has no file name"))?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        if dir.to_string_lossy().contains(['*', '?', '[']) {
            return Err(format!(
                "`{pattern}`: wildcards are only supported in the file name"
            ));
        }
        Ok(GlobPattern {
            dir,
            name: name.as_bytes().to_vec(),
            spill: false,
        })
    }

    /// The spill files of the SDK in `dir`.
    pub(crate) fn spill_dir(dir: &Path) -> Self {
        GlobPattern {
            dir: dir.to_path_buf(),
            name: format!("{SPILL_PREFIX}*{SPILL_SUFFIX}").into_bytes(),
            spill: true,
        }
    }

    /// Whether a file name matches the name pattern.
    pub(crate) fn matches_name(&self, name: &[u8]) -> bool {
        fn go(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
                Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
                Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
            }
        }
        go(&self.name, name)
    }

    /// Regular files in the directory that match, with their keys.
    fn scan(&self, found: &mut HashMap<FileKey, (PathBuf, bool)>) {
        use std::os::unix::ffi::OsStrExt;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !self.matches_name(entry.file_name().as_bytes()) {
                continue;
            }
            let path = entry.path();
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
            {
                found
                    .entry(FileKey::of(&meta))
                    .or_insert((path, self.spill));
            }
        }
    }
}

/// Settings and channels of the file input.
#[derive(Debug)]
pub(crate) struct FileInput {
    pub(crate) patterns: Vec<GlobPattern>,
    pub(crate) tx: mpsc::Sender<InputLine>,
    pub(crate) enricher: Arc<Enricher>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_line_bytes: usize,
    /// Stored positions to resume from (each used at most once).
    pub(crate) resume: HashMap<FileKey, FilePosition>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) scan_interval: Duration,
    pub(crate) read_interval: Duration,
    pub(crate) partial_timeout: Duration,
    /// What spill files need to be removed once their lines are acknowledged.
    pub(crate) spill: Option<SpillCleanup>,
    /// Patterns added by a configuration reload, taken at the next scan.
    pub(crate) added: Option<std::sync::mpsc::Receiver<GlobPattern>>,
}

struct Tailer {
    file: File,
    key: FileKey,
    /// The path it was found under; also its `source`.
    path: PathBuf,
    source: String,
    /// Bytes handed to the splitter.
    offset: u64,
    splitter: LineSplitter,
    last_data: Instant,
    fp_len: u64,
    fp_crc: u32,
    /// Still matched by a pattern at the last scan.
    present: bool,
    /// For a spill file: its name, and whether its writer is done with it.
    spill: Option<(SpillFileName, bool)>,
}

/// The batcher is gone; stop.
struct Closed;

impl FileInput {
    /// Runs until `stop` is set or the batcher hangs up. Blocking: run it on its own thread.
    pub(crate) fn run(mut self) {
        let mut tailers: HashMap<FileKey, Tailer> = HashMap::new();
        let mut next_scan = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_scan {
                self.scan(&mut tailers);
                next_scan = Instant::now() + self.scan_interval;
            }
            let mut busy = false;
            let mut done = Vec::new();
            for tailer in tailers.values_mut() {
                match self.poll(tailer, &mut buf) {
                    Ok(read) => busy |= read,
                    Err(Closed) => return,
                }
                if !tailer.present && tailer.last_data.elapsed() >= self.partial_timeout {
                    done.push(tailer.key);
                }
            }
            for key in done {
                if let Some(t) = tailers.remove(&key) {
                    tracing::info!(path = %t.path.display(), offset = t.offset, "Finished a rotated or removed file.");
                }
            }
            if let Some(spill) = &self.spill {
                remove_acknowledged(spill, &mut tailers);
            }
            if !busy {
                std::thread::sleep(self.read_interval);
            }
        }
    }

    fn scan(&mut self, tailers: &mut HashMap<FileKey, Tailer>) {
        if let Some(added) = &self.added {
            self.patterns.extend(added.try_iter());
        }
        let mut found = HashMap::new();
        for p in &self.patterns {
            p.scan(&mut found);
        }
        for t in tailers.values_mut() {
            t.present = found.contains_key(&t.key);
        }
        let names: Vec<SpillFileName> = found
            .values()
            .filter(|(_, spill)| *spill)
            .filter_map(|(path, _)| spill_name(path))
            .collect();
        for (key, (path, spill)) in found {
            if let Some(t) = tailers.get_mut(&key) {
                if let Some((name, finished)) = &mut t.spill {
                    *finished = super::spill::is_finished(name, &names);
                }
                continue;
            }
            let spill = if spill {
                let Some(name) = spill_name(&path) else {
                    continue;
                };
                Some((name, super::spill::is_finished(&name, &names)))
            } else {
                None
            };
            match self.open(&path, spill) {
                Ok(t) if tailers.contains_key(&t.key) => drop(t),
                Ok(t) => {
                    tracing::info!(path = %path.display(), offset = t.offset, "Tailing a file.");
                    tailers.insert(t.key, t);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, key = ?key, "Cannot open a file to tail.")
                }
            }
        }
    }

    fn open(
        &mut self,
        path: &Path,
        spill: Option<(SpillFileName, bool)>,
    ) -> std::io::Result<Tailer> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let key = FileKey::of(&meta);
        let mut tailer = Tailer {
            file,
            key,
            path: path.to_path_buf(),
            source: if spill.is_some() {
                "spill".to_string()
            } else {
                path.display().to_string()
            },
            offset: 0,
            splitter: LineSplitter::new(self.max_line_bytes),
            last_data: Instant::now(),
            fp_len: 0,
            fp_crc: 0,
            present: true,
            spill,
        };
        if let Some(pos) = self.resume.remove(&key) {
            if resumable(&tailer.file, meta.len(), &pos) {
                tailer.offset = pos.offset;
                tailer.fp_len = pos.fp_len;
                tailer.fp_crc = pos.fp_crc;
            } else {
                tracing::info!(path = %path.display(), "Stored position does not fit this file; reading it from the start.");
            }
        }
        Ok(tailer)
    }

    /// Reads what is new in one file (at most 1 MiB per call). Returns whether it read.
    fn poll(&self, t: &mut Tailer, buf: &mut [u8]) -> Result<bool, Closed> {
        let len = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(path = %t.path.display(), error = %e, "Cannot stat a tailed file.");
                return Ok(false);
            }
        };
        if len < t.offset {
            tracing::warn!(path = %t.path.display(), len, offset = t.offset, "File was truncated; reading it again from the start.");
            t.offset = 0;
            t.fp_len = 0;
            t.splitter.reset();
        }
        let mut total = 0usize;
        let mut out: Vec<InputLine> = Vec::new();
        while total < (1 << 20) {
            let n = match t.file.read_at(buf, t.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "Reading a tailed file failed.");
                    break;
                }
            };
            let base = t.offset;
            let first = out.len();
            let mut ends = Vec::new();
            t.splitter.feed(&buf[..n], |raw, end| {
                out.push(self.line(raw, &t.source));
                ends.push(base + end as u64);
            });
            t.offset += n as u64;
            total += n;
            // Every line carries the position after it: the batcher may cut a batch
            // after any line, and each batch must carry the positions of its lines.
            for (line, end) in out[first..].iter_mut().zip(ends) {
                line.position = Some(position(t, end));
            }
        }
        if total > 0 {
            t.last_data = Instant::now();
        } else if t.splitter.has_partial()
            && t.last_data.elapsed() >= self.partial_timeout
            // A spill file's partial line is a write in progress, unless the file is finished.
            && t.spill.is_none_or(|(_, finished)| finished)
            && let Some(rest) = t.splitter.take_partial()
        {
            let mut line = self.line(&rest, &t.source);
            line.position = Some(position(t, t.offset));
            out.push(line);
        }
        inc(
            &self.metrics.input(InputKind::File).discarded_bytes,
            t.splitter.take_discarded(),
        );
        for line in out {
            self.tx.blocking_send(line).map_err(|_| Closed)?;
        }
        Ok(total > 0)
    }

    fn line(&self, raw: &[u8], source: &str) -> InputLine {
        let counters = self.metrics.input(if source == "spill" {
            InputKind::Spill
        } else {
            InputKind::File
        });
        inc(&counters.events, 1);
        inc(&counters.bytes, raw.len() as u64 + 1);
        let (line, flags) = self.enricher.enrich(raw, source);
        if flags.truncated {
            inc(&counters.truncated_lines, 1);
        }
        InputLine {
            line,
            position: None,
            lane: crate::batch::lane_of(source),
        }
    }
}

/// The position just after `end`, with the fingerprint grown to cover up to 256 bytes.
fn position(t: &mut Tailer, end: u64) -> FilePosition {
    if t.fp_len < FINGERPRINT_BYTES && end > t.fp_len {
        let want = end.min(FINGERPRINT_BYTES);
        if let Ok(Some(crc)) = fingerprint(&t.file, want) {
            t.fp_len = want;
            t.fp_crc = crc;
        }
    }
    FilePosition {
        key: t.key,
        path: t.path.clone(),
        offset: end,
        fp_len: t.fp_len,
        fp_crc: t.fp_crc,
        record: 0,
    }
}

/// Removes the finished spill files whose lines are all acknowledged.
fn remove_acknowledged(spill: &SpillCleanup, tailers: &mut HashMap<FileKey, Tailer>) {
    let mut removed = Vec::new();
    for t in tailers.values() {
        let finished = matches!(t.spill, Some((_, true)));
        if !finished || t.splitter.has_partial() {
            continue;
        }
        match t.file.metadata() {
            Ok(m) if m.len() == t.offset => {}
            _ => continue,
        }
        if !spill.acknowledged(&t.key, t.offset) {
            continue;
        }
        match std::fs::remove_file(&t.path) {
            Ok(()) => {
                tracing::info!(path = %t.path.display(), bytes = t.offset, "Removed a spill file whose lines are all acknowledged.");
                removed.push(t.key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(t.key),
            Err(e) => {
                tracing::warn!(path = %t.path.display(), error = %e, "Could not remove an acknowledged spill file.");
            }
        }
    }
    for key in removed {
        tailers.remove(&key);
        spill.forget(&key);
    }
}

fn spill_name(path: &Path) -> Option<SpillFileName> {
    SpillFileName::parse(path.file_name()?.to_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(pattern: &str, name: &str, expected: bool) {
        let p = GlobPattern::parse(pattern).expect("valid pattern");
        assert_eq!(
            p.matches_name(name.as_bytes()),
            expected,
            "{pattern} vs {name}"
        );
    }

    #[test]
    fn glob_matches_file_names() {
        check("/var/log/*.log", "app.log", true);
        check("/var/log/*.log", "app.log.1", false);
        check("/var/log/app.log*", "app.log.1", true);
        check("/var/log/a?c", "abc", true);
        check("/var/log/a?c", "ac", false);
        check("x*y*z", "xaaybbz", true);
        assert!(GlobPattern::parse("/var/*/x.log").is_err());
        assert_eq!(
            GlobPattern::parse("x.log").expect("ok").dir,
            PathBuf::from(".")
        );
    }
}
