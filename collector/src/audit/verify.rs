//! Offline verification of an audit directory, in the manner of CloudTrail's
//! `validate-logs`: every segment is reported `valid` or `INVALID` with the reasons,
//! every checkpoint's signature and chain is checked, and the hash chain is recomputed
//! from the oldest retained record to the head.
//!
//! Trust comes from the public key: pass a copy kept apart from the data directory.
//! Falling back to `DIR/audit/public.key` only proves the files agree with the key
//! stored beside them. Removing the newest checkpoints together with the records after
//! the previous one cannot be told from a log that was never longer; publishing
//! checkpoints elsewhere (the HTTP API serves the latest) closes that gap.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, Checkpoint, PUBLIC_KEY_LEN, parse_public_key};
use super::error::{AuditError, IoContext, VerifyProblem};
use super::record::{self, HASH_LEN, HEADER_LEN, ZERO_HASH};
use super::segment::{AuditPaths, Frames, Item, list_segments, read_file};

/// Progress of a running verification, reported after each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Segments checked so far.
    pub segments_done: usize,
    /// Segments to check.
    pub segments_total: usize,
    /// Records checked so far.
    pub records_checked: u64,
}

/// The verdict on one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// The first seq, from the file name.
    pub first_seq: u64,
    /// Records read from it.
    pub records: u64,
    /// What is wrong with it; empty when valid.
    pub problems: Vec<VerifyProblem>,
}

impl SegmentReport {
    /// No problems were found in this segment.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The verdict on one checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// 1-based line number in `checkpoints.log`.
    pub number: usize,
    /// The seq it signs, if the line parsed.
    pub seq: Option<u64>,
    /// What is wrong with it; empty when valid.
    pub problems: Vec<VerifyProblem>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Each segment checked, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Each checkpoint, oldest first.
    pub checkpoints: Vec<CheckpointReport>,
    /// Problems that belong to no single file, such as a missing segment.
    pub problems: Vec<VerifyProblem>,
    /// Records whose chain hash was checked.
    pub records_checked: u64,
    /// The last seq present.
    pub last_seq: Option<u64>,
    /// The seq signed by the latest checkpoint whose signature verifies.
    pub signed_through: Option<u64>,
    /// Records after the latest valid checkpoint: chain-checked but not yet provable by
    /// a signature.
    pub unsigned_tail: u64,
    /// Observations that are not tampering, such as a partly written tail.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.all_problems().next().is_none()
    }

    /// Every problem: per segment, per checkpoint and global.
    pub fn all_problems(&self) -> impl Iterator<Item = &VerifyProblem> {
        self.segments
            .iter()
            .flat_map(|s| &s.problems)
            .chain(self.checkpoints.iter().flat_map(|c| &c.problems))
            .chain(&self.problems)
    }

    /// How many segments are valid.
    pub fn valid_segments(&self) -> usize {
        self.segments.iter().filter(|s| s.is_valid()).count()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        for s in &self.segments {
            let name = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            if s.is_valid() {
                writeln!(f, "{name}  valid  ({} records)", s.records)?;
            } else {
                writeln!(f, "{name}  INVALID")?;
                for p in s.problems.iter().take(SHOWN) {
                    writeln!(f, "    {p}")?;
                }
                if s.problems.len() > SHOWN {
                    writeln!(f, "    ... and {} more", s.problems.len() - SHOWN)?;
                }
            }
        }
        for c in self.checkpoints.iter().filter(|c| !c.problems.is_empty()) {
            writeln!(f, "checkpoint #{}  INVALID", c.number)?;
            for p in &c.problems {
                writeln!(f, "    {p}")?;
            }
        }
        for p in &self.problems {
            writeln!(f, "INVALID: {p}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let valid_cps = self
            .checkpoints
            .iter()
            .filter(|c| c.problems.is_empty())
            .count();
        write!(
            f,
            "Results: {}/{} segments valid, {}/{} checkpoints valid, {} records checked",
            self.valid_segments(),
            self.segments.len(),
            valid_cps,
            self.checkpoints.len(),
            self.records_checked,
        )?;
        match self.signed_through {
            Some(seq) => write!(f, ", signed through seq {seq}")?,
            None => write!(f, ", no valid checkpoint")?,
        }
        write!(f, ", unsigned tail {} records", self.unsigned_tail)
    }
}

/// A hash some checkpoint says a record must have.
#[derive(Clone, Copy)]
struct Expected {
    hash: [u8; HASH_LEN],
    checkpoint: usize,
    /// `true`: the checkpoint's head hash; `false`: its first_prev_hash.
    head: bool,
}

/// Verifies the audit log under `data_dir/audit`. `public_key` is 32 raw bytes or 64
/// hex digits; without it `DIR/audit/public.key` is used. Tampering and loss are
/// reported in the [`VerifyReport`]; `Err` means the check could not run (unreadable
/// files, no key).
pub fn verify(
    data_dir: &Path,
    public_key: Option<&[u8]>,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport, AuditError> {
    let paths = AuditPaths::new(data_dir);
    let key = match public_key {
        Some(bytes) => parse_public_key(bytes).ok_or(AuditError::BadPublicKey)?,
        None => {
            let bytes = fs::read(&paths.public_key).ctx("reading", &paths.public_key)?;
            parse_public_key(&bytes).ok_or_else(|| AuditError::Key {
                path: paths.public_key.clone(),
                reason: "not 64 hex digits".to_string(),
            })?
        }
    };
    let mut report = VerifyReport::default();
    let (checkpoints, anchor) = check_checkpoints(&paths, &key, &mut report)?;

    // Hashes the valid checkpoints pin, by seq.
    let mut expected: HashMap<u64, Vec<Expected>> = HashMap::new();
    for (number, cp) in &checkpoints {
        expected.entry(cp.seq).or_default().push(Expected {
            hash: cp.head_hash,
            checkpoint: *number,
            head: true,
        });
        if cp.first_seq > 0 {
            expected
                .entry(cp.first_seq - 1)
                .or_default()
                .push(Expected {
                    hash: cp.first_prev_hash,
                    checkpoint: *number,
                    head: false,
                });
        }
    }

    let (start_seq, start_prev) = anchor
        .as_ref()
        .map_or((0, ZERO_HASH), |(_, cp)| (cp.first_seq, cp.first_prev_hash));
    let mut listed = list_segments(&paths)?;
    let below = listed
        .windows(2)
        .take_while(|w| w[1].0 <= start_seq)
        .count();
    if below > 0 {
        report.notes.push(format!(
            "{below} segment(s) wholly below the retention point (seq {start_seq}) were skipped; \
             the collector removes them when it next opens the log"
        ));
        listed.drain(..below);
    }

    let mut chain = Chain {
        expected_seq: start_seq,
        prev: Some(start_prev),
        last_seq: None,
    };
    let total = listed.len();
    for (i, (first, path)) in listed.iter().enumerate() {
        let bytes = match read_file(path) {
            Ok(b) => b,
            // Removed by retention while we were reading.
            Err(AuditError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                report.notes.push(format!(
                    "{} disappeared during verification",
                    path.display()
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let is_last = i + 1 == total;
        let seg = check_segment(
            &bytes,
            path,
            *first,
            is_last,
            &mut chain,
            &expected,
            &mut report,
        );
        report.records_checked += seg.records;
        report.segments.push(seg);
        progress(VerifyProgress {
            segments_done: i + 1,
            segments_total: total,
            records_checked: report.records_checked,
        });
    }
    if listed.is_empty() {
        report.notes.push("no segment files".to_string());
    }

    report.last_seq = chain.last_seq;
    if let Some((number, cp)) = anchor {
        report.signed_through = Some(cp.seq);
        if chain.last_seq.is_none_or(|last| last < cp.seq) {
            let problem = VerifyProblem::MissingSignedRecords {
                last: chain.last_seq,
                checkpoint: number,
                signed: cp.seq,
            };
            match report.segments.last_mut() {
                Some(seg) => seg.problems.push(problem),
                None => report.problems.push(problem),
            }
        }
    }
    report.unsigned_tail = match (chain.last_seq, report.signed_through) {
        (Some(last), Some(signed)) => last.saturating_sub(signed),
        (Some(last), None) => (last + 1).saturating_sub(start_seq),
        (None, _) => 0,
    };
    Ok(report)
}

/// Parses and checks every checkpoint; returns the checkpoints whose signatures verify
/// and the latest of them (the anchor), with their line numbers.
#[allow(clippy::type_complexity)]
fn check_checkpoints(
    paths: &AuditPaths,
    key: &[u8; PUBLIC_KEY_LEN],
    report: &mut VerifyReport,
) -> Result<(Vec<(usize, Checkpoint)>, Option<(usize, Checkpoint)>), AuditError> {
    let bytes = match fs::read(&paths.checkpoints) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx("reading", &paths.checkpoints),
    };
    let (lines, torn) = checkpoint::split_checkpoint_lines(&bytes);
    if torn > 0 {
        report.notes.push(format!(
            "checkpoints.log ends with an incomplete line ({torn} bytes), ignored; the collector removes it when it next opens the log"
        ));
    }
    let mut valid = Vec::new();
    // The previous line: `None` before the first, `Some(None)` if it did not parse.
    let mut prev: Option<Option<Checkpoint>> = None;
    for (number, line) in lines {
        let mut problems = Vec::new();
        let parsed = match checkpoint::parse_line(line) {
            Ok(cp) => cp,
            Err(reason) => {
                problems.push(VerifyProblem::MalformedCheckpoint {
                    checkpoint: number,
                    reason,
                });
                report.checkpoints.push(CheckpointReport {
                    number,
                    seq: None,
                    problems,
                });
                prev = Some(None);
                continue;
            }
        };
        let signature_ok = parsed.verify_signature(key);
        if !signature_ok {
            problems.push(VerifyProblem::BadSignature {
                checkpoint: number,
                seq: parsed.seq,
            });
        }
        match &prev {
            None if parsed.prev_signature.is_some() => {
                problems.push(VerifyProblem::CheckpointChainBroken { checkpoint: number });
            }
            Some(Some(before)) => {
                if parsed.prev_signature != Some(before.signature) {
                    problems.push(VerifyProblem::CheckpointChainBroken { checkpoint: number });
                }
                if parsed.seq < before.seq {
                    problems.push(VerifyProblem::CheckpointOutOfOrder {
                        checkpoint: number,
                        what: format!("seq {} after seq {}", parsed.seq, before.seq),
                    });
                }
                if parsed.first_seq < before.first_seq {
                    problems.push(VerifyProblem::CheckpointOutOfOrder {
                        checkpoint: number,
                        what: format!(
                            "first_seq {} after first_seq {}",
                            parsed.first_seq, before.first_seq
                        ),
                    });
                }
            }
            _ => {}
        }
        report.checkpoints.push(CheckpointReport {
            number,
            seq: Some(parsed.seq),
            problems,
        });
        if signature_ok {
            valid.push((number, parsed.clone()));
        }
        prev = Some(Some(parsed));
    }
    let anchor = valid.last().cloned();
    Ok((valid, anchor))
}

/// Where the chain stands between segments.
struct Chain {
    /// The seq the next record should have.
    expected_seq: u64,
    /// The stored hash of the previous record; `None` after a gap or lost framing.
    prev: Option<[u8; HASH_LEN]>,
    last_seq: Option<u64>,
}

fn check_segment(
    bytes: &[u8],
    path: &Path,
    first: u64,
    is_last: bool,
    chain: &mut Chain,
    expected: &HashMap<u64, Vec<Expected>>,
    report: &mut VerifyReport,
) -> SegmentReport {
    let mut seg = SegmentReport {
        path: path.to_path_buf(),
        first_seq: first,
        records: 0,
        problems: Vec::new(),
    };
    if first > chain.expected_seq {
        report.problems.push(VerifyProblem::Gap {
            from: chain.expected_seq,
            to: first - 1,
        });
        chain.prev = None;
        chain.expected_seq = first;
    } else if first < chain.expected_seq {
        seg.problems.push(VerifyProblem::SeqOutOfOrder {
            expected: chain.expected_seq,
            found: first,
        });
    }
    if bytes.len() < HEADER_LEN {
        if is_last {
            report.notes.push(format!(
                "{} has an incomplete header: created just before a crash",
                path.display()
            ));
        } else {
            seg.problems.push(VerifyProblem::BadHeader {
                reason: format!("only {} bytes", bytes.len()),
            });
        }
        return seg;
    }
    match record::decode_header(bytes) {
        Ok(h) if h == first => {}
        Ok(h) => seg.problems.push(VerifyProblem::BadHeader {
            reason: format!("header says first seq {h}, file name says {first}"),
        }),
        Err(reason) => seg.problems.push(VerifyProblem::BadHeader { reason }),
    }

    let mut ends_batch = true;
    for item in Frames::new(bytes) {
        match item {
            Item::Frame {
                offset,
                body,
                stored_hash,
                ..
            } => {
                seg.records += 1;
                let rec = match record::decode_body(body, stored_hash) {
                    Ok(rec) => rec,
                    Err(reason) => {
                        seg.problems.push(VerifyProblem::MalformedRecord {
                            offset: offset as u64,
                            reason,
                        });
                        chain.prev = Some(stored_hash);
                        chain.expected_seq += 1;
                        continue;
                    }
                };
                let seq = rec.seq;
                if seq > chain.expected_seq {
                    seg.problems.push(VerifyProblem::Gap {
                        from: chain.expected_seq,
                        to: seq - 1,
                    });
                } else if seq < chain.expected_seq {
                    seg.problems.push(VerifyProblem::SeqOutOfOrder {
                        expected: chain.expected_seq,
                        found: seq,
                    });
                }
                let recomputed = chain.prev.map(|p| record::chain_hash(&p, body));
                if recomputed.is_some_and(|h| h != stored_hash) {
                    seg.problems.push(VerifyProblem::HashMismatch { seq });
                }
                let actual = recomputed.unwrap_or(stored_hash);
                for e in expected.get(&seq).into_iter().flatten() {
                    if e.hash != actual {
                        seg.problems.push(if e.head {
                            VerifyProblem::CheckpointHashMismatch {
                                seq,
                                checkpoint: e.checkpoint,
                            }
                        } else {
                            VerifyProblem::FirstPrevHashMismatch {
                                seq,
                                checkpoint: e.checkpoint,
                            }
                        });
                    }
                }
                chain.prev = Some(stored_hash);
                chain.expected_seq = seq.saturating_add(1);
                chain.last_seq = Some(seq);
                ends_batch = rec.batch_end;
            }
            Item::Torn { offset } => {
                if is_last {
                    report.notes.push(format!(
                        "the last segment ends with an incomplete record ({} bytes at byte {offset}): \
                         a crash or a write in progress; the collector removes it when it next opens the log",
                        bytes.len() - offset
                    ));
                } else {
                    seg.problems.push(VerifyProblem::TruncatedSegment {
                        offset: offset as u64,
                        after: chain.last_seq,
                    });
                }
            }
            Item::BadLength { offset, len } => {
                seg.problems.push(VerifyProblem::MalformedRecord {
                    offset: offset as u64,
                    reason: format!(
                        "impossible record length {len}; the rest of the segment cannot be read"
                    ),
                });
                chain.prev = None;
            }
        }
    }
    if !ends_batch && let Some(seq) = chain.last_seq {
        if is_last {
            report.notes.push(format!(
                "the log ends inside a batch (after seq {seq}): a crash or a write in progress; \
                     the collector removes the partial batch when it next opens the log"
            ));
        } else {
            seg.problems.push(VerifyProblem::SegmentEndsInBatch { seq });
        }
    }
    seg
}
