//! The cluster part of `spoor audit verify`: beyond each shard copy's own chain (checked
//! by [`crate::audit::verify`]), the ownership epochs and stream positions it records.
//!
//! For each copy (`DATA_DIR/shards/<k>`): every stream seq appears once, in increasing
//! order, without holes (a repeat would be a message indexed twice, a hole a message
//! lost); epoch records have increasing lease revisions; each data record names the
//! revision of the epoch it was written in. Across copies (several data directories
//! given): an epoch record that names the previous owner's head (`previous_head_seq`,
//! `previous_head_hash`) must match the record at that position in the previous owner's
//! copy of the same shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spoor_sdk::logfmt::{ReadOptions, read_line};

use super::shard::stream_seq_of;
use crate::audit::{AuditError, read_records};

/// One ownership epoch as its record states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The record's seq in the copy's chain.
    pub seq: u64,
    /// The lease revision (fencing token).
    pub revision: u64,
    /// The collector that owned the shard.
    pub owner: String,
    /// The copy's last stream seq when the epoch began.
    pub stream_seq: u64,
    /// The previous owner and the head it reported, when there was one.
    pub previous: Option<(String, u64, String)>,
}

/// What one shard copy's chain says about epochs and stream positions.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// The shard.
    pub shard: u32,
    /// The copy's directory.
    pub dir: PathBuf,
    /// Records read.
    pub records: u64,
    /// Stream messages in the chain.
    pub messages: u64,
    /// The first and last stream seq.
    pub stream_seqs: Option<(u64, u64)>,
    /// The epochs, oldest first.
    pub epochs: Vec<Epoch>,
    /// Problems found.
    pub problems: Vec<String>,
    first_seq: u64,
}

impl CopyReport {
    /// The owner named by this copy's epochs (the collector whose directory it is).
    pub fn node(&self) -> Option<&str> {
        self.epochs.last().map(|e| e.owner.as_str())
    }
}

/// The shard copies under a collector's data directory, by shard.
pub fn shard_dirs(data_dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(data_dir.join("shards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

fn field<'a>(pairs: &'a [(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Reads a shard copy's chain and checks its epochs and stream positions.
pub fn check_copy(shard: u32, dir: &Path) -> Result<CopyReport, AuditError> {
    let mut r = CopyReport {
        shard,
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    let mut last_stream: Option<u64> = None;
    let mut current_revision: Option<u64> = None;
    let first = crate::audit::segment_first_seqs(dir)?
        .first()
        .copied()
        .unwrap_or(0);
    r.first_seq = first;
    for record in read_records(dir, first) {
        let record = record?;
        r.records += 1;
        if let Some(rev) = record.batch_key.strip_prefix("epoch:r") {
            let (event, _) = read_line(
                &record.line,
                &ReadOptions {
                    max_line_bytes: usize::MAX,
                },
            );
            let pairs: Vec<(&str, &str)> = event.pairs().collect();
            let revision = rev.parse().unwrap_or(0);
            if current_revision.is_some_and(|c| c >= revision) {
                r.problems.push(format!(
                    "record {}: epoch revision {revision} does not follow revision {}",
                    record.seq,
                    current_revision.unwrap_or(0)
                ));
            }
            current_revision = Some(revision);
            let previous = match (
                field(&pairs, "previous_owner"),
                field(&pairs, "previous_head_seq").and_then(|s| s.parse().ok()),
                field(&pairs, "previous_head_hash"),
            ) {
                (Some(o), Some(s), Some(h)) => Some((o.to_string(), s, h.to_string())),
                _ => None,
            };
            r.epochs.push(Epoch {
                seq: record.seq,
                revision,
                owner: field(&pairs, "owner").unwrap_or_default().to_string(),
                stream_seq: field(&pairs, "stream_seq")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                previous,
            });
            continue;
        }
        if !record.batch_end {
            continue;
        }
        let Some(s) = stream_seq_of(&record.batch_key) else {
            continue;
        };
        r.messages += 1;
        let written_in = record
            .batch_key
            .split(':')
            .nth(2)
            .and_then(|r| r.strip_prefix('r'))
            .and_then(|r| r.parse::<u64>().ok());
        if written_in != current_revision {
            r.problems.push(format!(
                "record {}: written under lease revision {written_in:?}, but the current epoch is {current_revision:?}",
                record.seq
            ));
        }
        match last_stream {
            Some(l) if s <= l => r.problems.push(format!(
                "record {}: stream seq {s} repeats or goes back (after {l})",
                record.seq
            )),
            Some(l) if s > l + 1 => r.problems.push(format!(
                "record {}: stream seqs {}..{} are missing",
                record.seq,
                l + 1,
                s - 1
            )),
            None if s != 1 => r.problems.push(format!(
                "record {}: the copy starts at stream seq {s}, not 1",
                record.seq
            )),
            _ => {}
        }
        last_stream = Some(last_stream.map_or(s, |l| l.max(s)));
        r.stream_seqs = Some((
            r.stream_seqs.map_or(s, |(f, _)| f),
            last_stream.unwrap_or(s),
        ));
    }
    Ok(r)
}

/// Checks the epoch links between copies of the same shard (from different collectors'
/// data directories): adds problems to the copies whose links do not match.
pub fn check_links(copies: &mut [CopyReport]) {
    // (shard, node) -> index of its copy.
    let by_node: BTreeMap<(u32, String), usize> = copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some(((c.shard, c.node()?.to_string()), i)))
        .collect();
    let mut found = Vec::new();
    for (i, c) in copies.iter().enumerate() {
        for e in &c.epochs {
            let Some((owner, head_seq, hash)) = &e.previous else {
                continue;
            };
            if head_seq == &0 {
                continue;
            }
            let Some(&j) = by_node.get(&(c.shard, owner.clone())) else {
                continue;
            };
            if *head_seq - 1 < copies[j].first_seq {
                continue; // removed by retention there
            }
            let actual = read_records(&copies[j].dir, head_seq - 1)
                .next()
                .and_then(Result::ok)
                .filter(|r| r.seq == head_seq - 1)
                .map(|r| crate::http::hex_public_key(&r.hash));
            if actual.as_deref() != Some(hash.as_str()) {
                found.push((
                    i,
                    format!(
                        "epoch r{} names {owner}'s head at record {} with hash {hash}, but {owner}'s copy has {}",
                        e.revision,
                        head_seq - 1,
                        actual.unwrap_or_else(|| "no such record".into())
                    ),
                ));
            }
        }
    }
    for (i, p) in found {
        copies[i].problems.push(p);
    }
}

/// Number of epoch links that could be checked against another copy.
pub fn checked_links(copies: &[CopyReport]) -> usize {
    copies
        .iter()
        .flat_map(|c| {
            c.epochs.iter().filter(move |e| {
                e.previous.as_ref().is_some_and(|(o, s, _)| {
                    *s > 0
                        && copies
                            .iter()
                            .any(|d| d.shard == c.shard && d.node() == Some(o.as_str()))
                })
            })
        })
        .count()
}
