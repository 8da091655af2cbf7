//! The indexer: a dedicated thread that follows the audit log's committed head and writes
//! tantivy documents, committing on an interval so new lines are searchable within about
//! a second; and `rebuild`, which recreates the index from the audit log.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tantivy::query::RangeQuery;
use tantivy::{IndexWriter, Term};
use tokio::sync::watch;

use super::{LogIndex, build_document};
use crate::audit::read_records;
use crate::config::IndexConfig;
use crate::error::IndexError;

/// How long the thread sleeps when there is nothing to index.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// Follows the audit log into the index.
pub struct Indexer;

/// A running indexer.
pub struct IndexerHandle {
    stop: Arc<AtomicBool>,
    floor: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), IndexError>>>,
    indexed: watch::Receiver<u64>,
}

/// Progress of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct IndexerProgress {
    /// Records indexed so far.
    pub records: u64,
    /// The seq of the next record.
    pub next_seq: u64,
}

impl Indexer {
    /// Starts the indexer thread. `committed` is the audit writer's durable head: records
    /// below it are indexed, nothing beyond.
    pub fn spawn(
        index: LogIndex,
        data_dir: PathBuf,
        committed: watch::Receiver<u64>,
        config: IndexConfig,
    ) -> Result<IndexerHandle, IndexError> {
        let next_seq = index.next_seq()?;
        let writer: IndexWriter = index
            .index
            .writer_with_num_threads(1, config.writer_memory_bytes)?;
        let (indexed_tx, indexed) = watch::channel(next_seq);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let floor = Arc::new(AtomicU64::new(0));
        let floor_seen = floor.clone();
        let thread = std::thread::Builder::new()
            .name("spoor-indexer".into())
            .spawn(move || {
                follow(
                    index,
                    writer,
                    &data_dir,
                    next_seq,
                    committed,
                    &config,
                    &stop_flag,
                    &indexed_tx,
                    &floor_seen,
                )
            })
            .map_err(|source| IndexError::Io {
                path: PathBuf::from("indexer thread"),
                source,
            })?;
        Ok(IndexerHandle {
            stop,
            floor,
            thread: Some(thread),
            indexed,
        })
    }
}

impl IndexerHandle {
    /// The seq below which everything is searchable; changes after each commit.
    pub fn indexed(&self) -> watch::Receiver<u64> {
        self.indexed.clone()
    }

    /// Raise this to make the indexer delete every document with a lower seq (retention).
    pub fn retention_floor(&self) -> Arc<AtomicU64> {
        self.floor.clone()
    }

    /// Commits what is pending and stops the thread.
    pub fn shutdown(mut self) -> Result<(), IndexError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(IndexError::Io {
                path: PathBuf::from("indexer thread"),
                source: std::io::Error::other("the indexer thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for IndexerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[allow(clippy::too_many_arguments)]
fn follow(
    index: LogIndex,
    mut writer: IndexWriter,
    data_dir: &Path,
    mut next_seq: u64,
    committed: watch::Receiver<u64>,
    config: &IndexConfig,
    stop: &AtomicBool,
    indexed: &watch::Sender<u64>,
    floor: &AtomicU64,
) -> Result<(), IndexError> {
    let mut applied_floor = 0u64;
    let mut reader = read_records(data_dir, next_seq);
    let mut pending = 0usize;
    let mut last_commit = Instant::now() - config.commit_interval;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let wanted_floor = floor.load(Ordering::SeqCst);
        if wanted_floor > applied_floor {
            let below = Term::from_field_u64(index.schema.seq, wanted_floor);
            writer.delete_query(Box::new(RangeQuery::new(
                Bound::Unbounded,
                Bound::Excluded(below),
            )))?;
            applied_floor = wanted_floor;
            // Counted as pending so the deletion is committed with the next commit.
            pending += 1;
        }
        let head = *committed.borrow();
        let mut progressed = false;
        while next_seq < head && pending < config.commit_docs {
            match reader.next_record()? {
                Some(record) => {
                    next_seq = record.seq + 1;
                    writer.add_document(build_document(&index.schema, &record))?;
                    pending += 1;
                    progressed = true;
                }
                None => break,
            }
        }
        let due = last_commit.elapsed() >= config.commit_interval
            || pending >= config.commit_docs
            || stopping;
        if pending > 0 && due {
            commit(&mut writer, next_seq)?;
            index.reader.reload()?;
            indexed.send_replace(next_seq);
            tracing::debug!(next_seq, docs = pending, "Index committed.");
            pending = 0;
            last_commit = Instant::now();
        }
        if stopping {
            writer.wait_merging_threads()?;
            return Ok(());
        }
        if !progressed {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

fn commit(writer: &mut IndexWriter, next_seq: u64) -> Result<(), IndexError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&format!("next_seq={next_seq}"));
    prepared.commit()?;
    Ok(())
}

/// Deletes the index under `data_dir` and builds it again from the audit log, calling
/// `progress` every 10,000 records. The collector must not be running.
pub fn rebuild(
    data_dir: &Path,
    memory_bytes: usize,
    progress: &mut dyn FnMut(IndexerProgress),
) -> Result<IndexerProgress, IndexError> {
    // Open the audit log once so its recovery runs first: a batch torn by a crash is cut
    // from the log, and must not be indexed from the raw files either.
    crate::audit::AuditLog::open(data_dir, crate::audit::AuditOptions::default())?.close()?;
    let path = LogIndex::dir(data_dir);
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
    }
    let index = LogIndex::open(data_dir)?;
    let mut writer: IndexWriter = index.index.writer(memory_bytes)?;
    let mut reader = read_records(data_dir, 0);
    let mut done = IndexerProgress {
        records: 0,
        next_seq: 0,
    };
    while let Some(record) = reader.next_record()? {
        writer.add_document(build_document(&index.schema, &record))?;
        done.records += 1;
        done.next_seq = record.seq + 1;
        if done.records.is_multiple_of(10_000) {
            progress(done);
        }
    }
    commit(&mut writer, done.next_seq)?;
    writer.wait_merging_threads()?;
    progress(done);
    Ok(done)
}
