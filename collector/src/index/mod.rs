//! The search index: a tantivy index derived from the audit log, never the other way round.
//!
//! Invariants:
//! - Only records that are durable in the audit log are indexed (the indexer follows the
//!   writer's committed head).
//! - Each tantivy commit carries, as its payload, the seq of the next record to index. After
//!   a crash, uncommitted documents are gone and indexing resumes at that seq: no line is
//!   missing and none is there twice.
//! - The index can be deleted at any time and rebuilt from the audit log (`reindex`).

mod document;
mod writer;

use std::path::{Path, PathBuf};

use spoor_query::{LogSchema, register_tokenizers};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, ReloadPolicy};

pub use document::build_document;
pub use writer::{Indexer, IndexerHandle, IndexerProgress, rebuild};

use crate::error::IndexError;

/// An open index with its schema and a reader that the indexer reloads after each commit.
#[derive(Clone)]
pub struct LogIndex {
    /// The tantivy index.
    pub index: Index,
    /// Field handles.
    pub schema: std::sync::Arc<LogSchema>,
    /// The shared reader; searches take a searcher from it.
    pub reader: IndexReader,
}

impl LogIndex {
    /// Where the index lives inside the data directory.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("index")
    }

    /// Opens the index under `data_dir/index`, creating it when absent.
    pub fn open(data_dir: &Path) -> Result<Self, IndexError> {
        let path = Self::dir(data_dir);
        std::fs::create_dir_all(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
        let schema = LogSchema::new();
        let dir = MmapDirectory::open(&path).map_err(|source| IndexError::Open {
            path: path.clone(),
            source,
        })?;
        let index = Index::open_or_create(dir, schema.schema.clone())?;
        register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            schema: std::sync::Arc::new(schema),
            reader,
        })
    }

    /// The seq of the next record to index, from the last commit's payload (0 when new).
    pub fn next_seq(&self) -> Result<u64, IndexError> {
        let meta = self.index.load_metas()?;
        Ok(meta
            .payload
            .as_deref()
            .and_then(|p| p.strip_prefix("next_seq="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
