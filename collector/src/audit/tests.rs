//! Tests of the audit log as a whole: real files in temporary directories.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::record::{self, RecordFields};
use super::segment::{Frames, Item};
use super::*;

/// Segments of about 20 records, and no automatic checkpoints.
fn small() -> AuditOptions {
    AuditOptions {
        segment_max_bytes: 2048,
        checkpoint_every_records: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
    }
}

fn lines(batch: usize, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("level=info msg=\"batch {batch} line {i}\"").into_bytes())
        .collect()
}

/// Appends `batches` batches of `per` lines with keys `b0`, `b1`, ... and syncs.
fn fill(log: &mut AuditLog, batches: Range<usize>, per: usize) {
    for b in batches {
        log.append_batch(
            &format!("b{b}"),
            "agent-1",
            1_700_000_000_000_000_000 + b as i64,
            &lines(b, per),
        )
        .unwrap();
    }
    log.sync().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("audit/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// (offset, len, seq) of each complete frame of a segment file.
fn frames(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    Frames::new(bytes)
        .filter_map(|item| match item {
            Item::Frame {
                offset, body, len, ..
            } => Some((offset, len, record::body_seq(body).unwrap())),
            _ => None,
        })
        .collect()
}

fn check(dir: &Path) -> VerifyReport {
    verify(dir, None, &mut |_| {}).unwrap()
}

#[track_caller]
fn assert_ok(report: &VerifyReport) {
    assert!(report.is_ok(), "expected a clean report:\n{report}");
}

#[track_caller]
fn assert_problem(report: &VerifyReport, pred: impl Fn(&VerifyProblem) -> bool) {
    assert!(!report.is_ok());
    assert!(
        report.all_problems().any(pred),
        "the expected problem is not named:\n{report}"
    );
}

fn all_records(dir: &Path, from: u64) -> Vec<AuditRecord> {
    read_records(dir, from)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn append_reopen_and_seqs_are_gapless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, small()).unwrap();
    assert_eq!(log.next_seq(), 0);
    assert_eq!(log.head_hash(), ZERO_HASH);
    assert_eq!(log.append_batch("k1", "a", 5, &lines(0, 3)).unwrap(), 0..3);
    assert_eq!(
        log.append_batch("", "a", 6, &[b"x=1".to_vec()]).unwrap(),
        3..4
    );
    assert_eq!(
        log.append_batch("k2", "a", 7, &Vec::<Vec<u8>>::new())
            .unwrap(),
        4..4
    );
    log.sync().unwrap();
    let head = log.head_hash();
    drop(log);

    let mut log = AuditLog::open(dir, small()).unwrap();
    assert_eq!((log.next_seq(), log.head_hash()), (4, head));
    fill(&mut log, 1..60, 2);
    drop(log);

    assert!(segments(dir).len() > 3, "small segments rotate");
    let recs = all_records(dir, 0);
    assert_eq!(recs.len(), 4 + 59 * 2);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
    }
    assert_eq!(recs[0].line, b"level=info msg=\"batch 0 line 0\"");
    assert_eq!((recs[2].batch_end, recs[1].batch_end), (true, false));
    assert_eq!(recs[3].batch_key, "");
    // Segment files are named by their first seq and hold whole batches.
    for path in segments(dir) {
        let first: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(frames(&bytes)[0].2, first);
    }
    let report = check(dir);
    assert_ok(&report);
    assert_eq!(report.records_checked, 122);
    assert_eq!((report.signed_through, report.unsigned_tail), (None, 122));
    assert!(report.to_string().contains("segments valid"), "{report}");
}

#[test]
fn torn_tail_is_truncated_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
    fill(&mut log, 0..4, 3);
    let head = log.head_hash();
    drop(log);
    let seg = segments(dir).pop().unwrap();
    let clean = fs::read(&seg).unwrap();

    // A frame cut short, garbage with an impossible length, and a complete frame of junk.
    let mut partial = Vec::new();
    let fields = RecordFields {
        seq: 12,
        ingest_ts_nanos: 1,
        batch_end: true,
        agent: "a",
        batch_key: "k",
        line: b"msg=torn",
    };
    record::encode_frame(&mut partial, &head, &fields);
    partial.truncate(partial.len() - 5);
    let mut junk_frame = 40u32.to_le_bytes().to_vec();
    junk_frame.extend(std::iter::repeat_n(0xAB, 40 + 32));
    for garbage in [partial, vec![0xff; 7], junk_frame, vec![0, 0]] {
        let mut bytes = clean.clone();
        bytes.extend_from_slice(&garbage);
        fs::write(&seg, &bytes).unwrap();
        let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
        assert_eq!((log.next_seq(), log.head_hash()), (12, head));
        assert_eq!(fs::read(&seg).unwrap(), clean, "tail removed");
        assert_eq!(
            log.append_batch("next", "a", 1, &lines(9, 1)).unwrap(),
            12..13
        );
        drop(log);
        assert_ok(&check(dir));
        fs::write(&seg, &clean).unwrap();
    }
}

#[test]
fn half_written_batch_is_removed_on_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
    log.append_batch("A", "agent", 1, &lines(0, 3)).unwrap();
    log.append_batch("B", "agent", 2, &lines(1, 5)).unwrap();
    log.sync().unwrap();
    drop(log);
    let seg = segments(dir).pop().unwrap();
    let clean = fs::read(&seg).unwrap();
    let f = frames(&clean);
    assert_eq!(f.len(), 8);
    let (off4, len4, _) = f[4];

    // Cut inside B's second record, and exactly after it.
    for cut in [off4 + len4 / 2, off4 + len4] {
        fs::write(&seg, &clean[..cut]).unwrap();
        // Before recovery, verify sees the partial batch as a crash artifact, not tampering.
        let report = check(dir);
        assert_ok(&report);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("batch") || n.contains("incomplete")),
            "{report}"
        );

        let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
        assert_eq!(log.next_seq(), 3);
        assert_eq!(log.seen_batch("A"), Some(0..3));
        assert_eq!(log.seen_batch("B"), None);
        assert_eq!(fs::metadata(&seg).unwrap().len() as usize, f[3].0);
        assert_eq!(
            log.append_batch("B", "agent", 3, &lines(1, 5)).unwrap(),
            3..8
        );
        drop(log);
        assert_ok(&check(dir));
        fs::write(&seg, &clean).unwrap();
    }
}

#[test]
fn batch_keys_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, small()).unwrap();
    fill(&mut log, 0..40, 3);
    drop(log);
    let mut log = AuditLog::open(dir, small()).unwrap();
    for b in 0..40u64 {
        assert_eq!(log.seen_batch(&format!("b{b}")), Some(b * 3..b * 3 + 3));
    }
    assert_eq!(log.seen_batch("b40"), None);
    assert!(matches!(
        log.append_batch("b7", "a", 0, &lines(7, 3)),
        Err(AuditError::DuplicateBatch { seqs, .. }) if seqs == (21..24)
    ));
    // Empty keys are never deduplicated.
    log.append_batch("", "a", 0, &lines(0, 1)).unwrap();
    log.append_batch("", "a", 0, &lines(0, 1)).unwrap();
    assert_eq!(log.next_seq(), 122);
}

#[test]
fn open_refuses_to_drop_signed_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
    fill(&mut log, 0..3, 2);
    log.write_checkpoint().unwrap().unwrap();
    drop(log);
    let seg = segments(dir).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let last = *frames(&bytes).last().unwrap();
    fs::write(&seg, &bytes[..last.0 + 3]).unwrap();
    assert!(matches!(
        AuditLog::open(dir, AuditOptions::default()),
        Err(AuditError::Corrupt { .. })
    ));
    assert_problem(&check(dir), |p| {
        matches!(
            p,
            VerifyProblem::MissingSignedRecords {
                signed: 5,
                last: Some(4),
                ..
            }
        )
    });
}

#[test]
fn checkpoints_are_due_by_count_and_by_time() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = AuditOptions {
        checkpoint_every_records: 10,
        checkpoint_interval: Duration::from_secs(10),
        ..AuditOptions::default()
    };
    let mut log = AuditLog::open(tmp.path(), opts.clone()).unwrap();
    let t0 = SystemTime::now();
    assert_eq!(log.checkpoint_due_in(t0), None);
    assert!(
        log.checkpoint_if_due(t0).unwrap().is_none(),
        "nothing to sign"
    );
    fill(&mut log, 0..1, 5);
    assert!(log.checkpoint_if_due(t0).unwrap().is_none());
    fill(&mut log, 1..2, 5);
    let cp = log.checkpoint_if_due(t0).unwrap().unwrap();
    assert_eq!(
        (cp.seq, cp.head_hash, cp.first_seq, cp.prev_signature),
        (9, log.head_hash(), 0, None)
    );
    assert!(cp.verify_signature(&log.public_key()));

    fill(&mut log, 2..3, 1);
    assert!(
        log.checkpoint_if_due(t0 + Duration::from_secs(9))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        log.checkpoint_due_in(t0 + Duration::from_secs(9)),
        Some(Duration::from_secs(1))
    );
    let cp2 = log
        .checkpoint_if_due(t0 + Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!((cp2.seq, cp2.prev_signature), (10, Some(cp.signature)));
    assert_eq!(log.latest_checkpoint(), Some(&cp2));
    drop(log);

    // The latest checkpoint is found again on reopen and the chain continues.
    let mut log = AuditLog::open(tmp.path(), opts).unwrap();
    assert_eq!(log.latest_checkpoint(), Some(&cp2));
    fill(&mut log, 3..4, 1);
    let cp3 = log.write_checkpoint().unwrap().unwrap();
    assert_eq!(cp3.prev_signature, Some(cp2.signature));
    drop(log);
    let report = check(tmp.path());
    assert_ok(&report);
    assert_eq!(
        (
            report.checkpoints.len(),
            report.signed_through,
            report.unsigned_tail
        ),
        (3, Some(11), 0)
    );
}

#[test]
fn torn_checkpoint_line_is_dropped_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, AuditOptions::default()).unwrap();
    fill(&mut log, 0..2, 2);
    let cp = log.write_checkpoint().unwrap().unwrap();
    drop(log);
    let path = dir.join("audit/checkpoints.log");
    let mut text = fs::read(&path).unwrap();
    let good_len = text.len();
    text.extend_from_slice(b"{\"v\":1,\"seq\":");
    fs::write(&path, &text).unwrap();
    assert_ok(&check(dir));
    let log = AuditLog::open(dir, AuditOptions::default()).unwrap();
    assert_eq!(log.latest_checkpoint(), Some(&cp));
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, good_len);
}

#[test]
fn reader_follows_the_writer_and_waits_on_a_partial_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, small()).unwrap();
    let mut reader = read_records(dir, 0);
    assert!(reader.next_record().unwrap().is_none());

    log.append_batch("a", "ag", 1, &lines(0, 2)).unwrap();
    assert!(
        reader.next_record().unwrap().is_none(),
        "buffered, not yet written"
    );
    log.flush().unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().seq, 0);
    assert_eq!(reader.next_record().unwrap().unwrap().seq, 1);
    assert!(reader.next_record().unwrap().is_none());

    // A record that is only partly written is "not yet", then readable once complete.
    let seg = segments(dir).pop().unwrap();
    let mut frame = Vec::new();
    let fields = RecordFields {
        seq: 2,
        ingest_ts_nanos: 1,
        batch_end: true,
        agent: "ag",
        batch_key: "",
        line: b"msg=slow",
    };
    record::encode_frame(&mut frame, &log.head_hash(), &fields);
    let before = fs::read(&seg).unwrap();
    for cut in [1, 4, 10, frame.len() - 1] {
        let mut bytes = before.clone();
        bytes.extend_from_slice(&frame[..cut]);
        fs::write(&seg, &bytes).unwrap();
        assert!(reader.next_record().unwrap().is_none(), "cut at {cut}");
    }
    let mut bytes = before.clone();
    bytes.extend_from_slice(&frame);
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().line, b"msg=slow");
    fs::write(&seg, &before).unwrap();
    drop(log);

    // Across segment rotations, and starting in the middle.
    let mut log = AuditLog::open(dir, small()).unwrap();
    let mut reader = read_records(dir, 1);
    let mut seen = Vec::new();
    for b in 1..50 {
        log.append_batch(&format!("b{b}"), "ag", 1, &lines(b, 2))
            .unwrap();
        if b % 7 == 0 {
            log.flush().unwrap();
            seen.extend(reader.by_ref().map(|r| r.unwrap().seq));
        }
    }
    log.flush().unwrap();
    seen.extend(reader.by_ref().map(|r| r.unwrap().seq));
    assert!(segments(dir).len() > 3);
    assert_eq!(seen, (1..100).collect::<Vec<u64>>());

    // Starting in a later segment, and beyond the head until the writer gets there.
    let mut reader = read_records(dir, 77);
    assert_eq!(reader.next().unwrap().unwrap().seq, 77);
    let mut ahead = read_records(dir, 130);
    assert!(ahead.next_record().unwrap().is_none());
    for b in 50..80 {
        log.append_batch(&format!("b{b}"), "ag", 1, &lines(b, 2))
            .unwrap();
    }
    log.flush().unwrap();
    assert_eq!(ahead.next_record().unwrap().unwrap().seq, 130);
    assert_eq!(ahead.last().unwrap().unwrap().seq, 159);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs_and_answers_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let opts = AuditOptions {
        checkpoint_every_records: 40,
        ..AuditOptions::default()
    };
    let log = AuditLog::open(&dir, opts).unwrap();
    let writer = Arc::new(AuditWriter::spawn(log).unwrap());
    let mut committed = writer.committed();

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let w = writer.clone();
            tokio::spawn(
                async move { w.append(format!("batch-{i}"), "agent-1", lines(i, 3)).await },
            )
        })
        .collect();
    let mut ranges = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            AppendOutcome::Appended { seqs } => ranges.push(seqs),
            other => panic!("unexpected {other:?}"),
        }
    }
    let batch7 = ranges[7].clone();
    ranges.sort_by_key(|r| r.start);
    for (i, r) in ranges.iter().enumerate() {
        assert_eq!(*r, i as u64 * 3..i as u64 * 3 + 3);
    }
    let stats = writer.stats();
    assert_eq!(stats.batches_appended, 50);
    assert!(
        stats.fsyncs < 50,
        "concurrent batches share fsyncs: {stats:?}"
    );
    assert!(*committed.borrow_and_update() >= 150);

    // Retries of a committed batch, and the same new key many times at once.
    let again = writer
        .append("batch-7", "agent-1", lines(7, 3))
        .await
        .unwrap();
    assert_eq!(again, AppendOutcome::Duplicate { seqs: batch7 });
    let same: Vec<_> = (0..10)
        .map(|_| {
            let w = writer.clone();
            tokio::spawn(async move { w.append("same", "agent-2", lines(99, 2)).await })
        })
        .collect();
    let mut appended = Vec::new();
    let mut duplicates = Vec::new();
    for t in same {
        match t.await.unwrap().unwrap() {
            AppendOutcome::Appended { seqs } => appended.push(seqs),
            AppendOutcome::Duplicate { seqs } => duplicates.push(seqs),
        }
    }
    assert_eq!(appended, vec![150..152]);
    assert_eq!(duplicates, vec![150..152; 9]);
    assert_eq!(*committed.borrow_and_update(), 152);

    writer.shutdown().await.unwrap();
    assert!(matches!(
        writer.append("late", "a", lines(0, 1)).await,
        Err(AuditError::WriterClosed)
    ));
    let cp = writer.latest_checkpoint().unwrap();
    assert_eq!(cp.seq, 151);
    assert_eq!(all_records(&dir, 0).len(), 152);
    let report = check(&dir);
    assert_ok(&report);
    assert_eq!(
        (report.signed_through, report.unsigned_tail),
        (Some(151), 0)
    );
    assert!(
        report.checkpoints.len() >= 2,
        "signed while running and at shutdown"
    );
    let log = AuditLog::open(&dir, AuditOptions::default()).unwrap();
    assert_eq!(log.seen_batch("same"), Some(150..152));
}

// ---- tampering: each is detected and named ----

/// A log of 200 records in 2 KiB segments with checkpoints along the way and at the end.
fn tamper_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(tmp.path(), small()).unwrap();
    for b in 0..50 {
        fill(&mut log, b..b + 1, 4);
        if b % 10 == 9 {
            log.write_checkpoint().unwrap();
        }
    }
    drop(log);
    assert_ok(&check(tmp.path()));
    tmp
}

/// Rewrites segment `index` through `edit`.
fn edit_segment(dir: &Path, index: usize, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let path = segments(dir)[index].clone();
    let mut bytes = fs::read(&path).unwrap();
    edit(&mut bytes);
    fs::write(&path, &bytes).unwrap();
    path
}

#[test]
fn flipped_byte_in_a_record_is_named() {
    let tmp = tamper_fixture();
    let mut seq = 0;
    edit_segment(tmp.path(), 2, |b| {
        let (off, len, s) = frames(b)[3];
        seq = s;
        b[off + len - 40] ^= 0x01; // inside the line
    });
    let report = check(tmp.path());
    assert_problem(&report, |p| *p == VerifyProblem::HashMismatch { seq });
    assert!(!report.segments[2].is_valid());
    assert_eq!(report.valid_segments(), report.segments.len() - 1);
    let text = report.to_string();
    assert!(
        text.contains("INVALID") && text.contains(&format!("hash mismatch at seq {seq}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Results: {}/{} segments valid",
            report.segments.len() - 1,
            report.segments.len()
        )),
        "{text}"
    );
}

#[test]
fn deleted_record_is_named() {
    let tmp = tamper_fixture();
    let mut seq = 0;
    edit_segment(tmp.path(), 1, |b| {
        let (off, len, s) = frames(b)[2];
        seq = s;
        b.drain(off..off + len);
    });
    assert_problem(&check(tmp.path()), |p| {
        *p == VerifyProblem::Gap { from: seq, to: seq }
    });
}

#[test]
fn swapped_records_are_named() {
    let tmp = tamper_fixture();
    edit_segment(tmp.path(), 1, |b| {
        let f = frames(b);
        let (a, c) = (f[1], f[2]);
        let first = b[a.0..a.0 + a.1].to_vec();
        let second = b[c.0..c.0 + c.1].to_vec();
        let mut swapped = second;
        swapped.extend_from_slice(&first);
        b.splice(a.0..c.0 + c.1, swapped);
    });
    assert_problem(&check(tmp.path()), |p| {
        matches!(p, VerifyProblem::SeqOutOfOrder { .. })
    });
}

#[test]
fn truncated_segments_are_named() {
    // A torn record in a segment that is not the last.
    let tmp = tamper_fixture();
    edit_segment(tmp.path(), 1, |b| b.truncate(b.len() - 10));
    assert_problem(&check(tmp.path()), |p| {
        matches!(p, VerifyProblem::TruncatedSegment { .. })
    });

    // Whole records cut from the end of an older segment.
    let tmp = tamper_fixture();
    edit_segment(tmp.path(), 1, |b| {
        let last = *frames(b).last().unwrap();
        b.truncate(last.0);
    });
    assert_problem(&check(tmp.path()), |p| {
        matches!(p, VerifyProblem::SegmentEndsInBatch { .. })
    });

    // Whole batches cut from the end of the log, below the signed head.
    let tmp = tamper_fixture();
    let n = segments(tmp.path()).len();
    edit_segment(tmp.path(), n - 1, |b| {
        let f = frames(b);
        b.truncate(f[f.len() - 4].0);
    });
    assert_problem(&check(tmp.path()), |p| {
        matches!(
            p,
            VerifyProblem::MissingSignedRecords {
                signed: 199,
                last: Some(195),
                ..
            }
        )
    });
}

#[test]
fn replaced_checkpoint_signature_is_named() {
    let tmp = tamper_fixture();
    let path = tmp.path().join("audit/checkpoints.log");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut cp = Checkpoint::from_json(&lines[1]).unwrap();
    cp.signature[5] ^= 0x40;
    lines[1] = cp.to_json();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let report = check(tmp.path());
    assert_problem(&report, |p| {
        *p == VerifyProblem::BadSignature {
            checkpoint: 2,
            seq: 79,
        }
    });
    assert!(!report.checkpoints[1].problems.is_empty());

    // A wrong public key fails every checkpoint.
    let other = [7u8; 32];
    let report = verify(tmp.path(), Some(&other), &mut |_| {}).unwrap();
    assert_eq!(
        report
            .checkpoints
            .iter()
            .filter(|c| !c.problems.is_empty())
            .count(),
        5
    );
    assert_eq!(report.signed_through, None);
}

#[test]
fn removed_or_altered_checkpoints_break_the_chain() {
    let tmp = tamper_fixture();
    let path = tmp.path().join("audit/checkpoints.log");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let without_second: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| *l)
        .collect();
    fs::write(&path, without_second.join("\n") + "\n").unwrap();
    assert_problem(&check(tmp.path()), |p| {
        *p == VerifyProblem::CheckpointChainBroken { checkpoint: 2 }
    });

    // Records changed and re-chained by someone without the key: the stored hashes agree
    // with each other again, but not with the signed head hashes.
    let tmp = tamper_fixture();
    let dir = tmp.path();
    rechain_with_change(dir, 42);
    let report = check(dir);
    assert_problem(&report, |p| {
        matches!(p, VerifyProblem::CheckpointHashMismatch { .. })
    });
    assert!(
        !report
            .all_problems()
            .any(|p| matches!(p, VerifyProblem::HashMismatch { .. })),
        "{report}"
    );
}

/// Changes record `target`'s line and recomputes every stored hash from there on, as a
/// forger without the signing key would.
fn rechain_with_change(dir: &Path, target: u64) {
    let mut prev = ZERO_HASH;
    for path in segments(dir) {
        let bytes = fs::read(&path).unwrap();
        let mut out = bytes[..record::HEADER_LEN].to_vec();
        for item in Frames::new(&bytes) {
            let Item::Frame {
                body, stored_hash, ..
            } = item
            else {
                panic!("clean fixture")
            };
            let mut rec = record::decode_body(body, stored_hash).unwrap();
            if rec.seq == target {
                rec.line = b"level=info msg=forged".to_vec();
            }
            let fields = RecordFields {
                seq: rec.seq,
                ingest_ts_nanos: rec.ingest_ts_nanos,
                batch_end: rec.batch_end,
                agent: &rec.agent,
                batch_key: &rec.batch_key,
                line: &rec.line,
            };
            prev = record::encode_frame(&mut out, &prev, &fields);
        }
        fs::write(&path, out).unwrap();
    }
}

#[test]
fn removed_segments_are_named() {
    let tmp = tamper_fixture();
    let segs = segments(tmp.path());
    let first_of = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let (from, to) = (first_of(&segs[3]), first_of(&segs[4]) - 1);
    fs::remove_file(&segs[3]).unwrap();
    let report = check(tmp.path());
    assert_problem(&report, |p| *p == VerifyProblem::Gap { from, to });
    assert!(report.to_string().contains("missing segment"), "{report}");
    assert!(matches!(
        AuditLog::open(tmp.path(), small()),
        Err(AuditError::Corrupt { .. })
    ));

    // The oldest segment, without retention.
    let tmp = tamper_fixture();
    let segs = segments(tmp.path());
    let to = first_of(&segs[1]) - 1;
    fs::remove_file(&segs[0]).unwrap();
    assert_problem(&check(tmp.path()), |p| {
        *p == VerifyProblem::Gap { from: 0, to }
    });

    // The newest segment.
    let tmp = tamper_fixture();
    fs::remove_file(segments(tmp.path()).pop().unwrap()).unwrap();
    assert_problem(&check(tmp.path()), |p| {
        matches!(p, VerifyProblem::MissingSignedRecords { .. })
    });
}

#[test]
fn retention_then_verify_passes_and_survives_reopen() {
    let tmp = tamper_fixture();
    let dir = tmp.path();
    let mut log = AuditLog::open(dir, small()).unwrap();
    assert_eq!(log.apply_retention(0).unwrap(), 0);
    let removed = log.apply_retention(100).unwrap();
    assert!(removed >= 3, "removed {removed}");
    let first = log.first_seq();
    assert!(first <= 100 && first > 0);
    assert_eq!(log.latest_checkpoint().unwrap().first_seq, first);
    assert_eq!(log.seen_batch("b0"), None);
    assert!(log.seen_batch("b49").is_some());
    fill(&mut log, 50..55, 4);
    drop(log);

    let report = check(dir);
    assert_ok(&report);
    assert_eq!(report.segments[0].first_seq, first);
    assert_eq!(report.unsigned_tail, 20);
    let recs = all_records(dir, 0);
    assert_eq!(
        recs[0].seq, first,
        "reading from a removed seq starts at the oldest retained"
    );
    assert_eq!(recs.last().unwrap().seq, 219);

    // An interrupted retention (checkpoint signed, files not yet deleted) verifies, and
    // open finishes it.
    let mut log = AuditLog::open(dir, small()).unwrap();
    let doomed = segments(dir)[0].clone();
    let doomed_bytes = fs::read(&doomed).unwrap();
    log.apply_retention(150).unwrap();
    drop(log);
    assert!(!doomed.exists());
    fs::write(&doomed, &doomed_bytes).unwrap();
    let report = check(dir);
    assert_ok(&report);
    assert!(
        report.notes.iter().any(|n| n.contains("retention")),
        "{report}"
    );
    let log = AuditLog::open(dir, small()).unwrap();
    assert!(!doomed.exists());
    assert_eq!(log.next_seq(), 220);
    drop(log);

    // Removing more without a checkpoint is caught.
    let segs = segments(dir);
    fs::remove_file(&segs[0]).unwrap();
    assert_problem(&check(dir), |p| matches!(p, VerifyProblem::Gap { .. }));
}

#[test]
fn a_thousand_random_byte_flips_are_each_detected() {
    let tmp = tamper_fixture();
    let dir = tmp.path();
    let pristine: Vec<(PathBuf, Vec<u8>)> = segments(dir)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let total: usize = pristine.iter().map(|(_, b)| b.len()).sum();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for round in 0..1000 {
        let mut pos = (next() % total as u64) as usize;
        let mask = (next() % 255 + 1) as u8;
        let (path, bytes) = pristine
            .iter()
            .find(|(_, b)| {
                if pos < b.len() {
                    true
                } else {
                    pos -= b.len();
                    false
                }
            })
            .unwrap();
        let mut flipped = bytes.clone();
        flipped[pos] ^= mask;
        fs::write(path, &flipped).unwrap();
        let report = check(dir);
        assert!(
            !report.is_ok(),
            "round {round}: flip {mask:#04x} at byte {pos} of {} went unnoticed:\n{report}",
            path.display()
        );
        fs::write(path, bytes).unwrap();
    }
    assert_ok(&check(dir));
}

#[test]
fn verify_reports_progress_and_needs_a_key() {
    let tmp = tamper_fixture();
    let mut calls = Vec::new();
    let report = verify(tmp.path(), None, &mut |p| calls.push(p)).unwrap();
    assert_eq!(calls.len(), report.segments.len());
    assert_eq!(calls.last().unwrap().records_checked, 200);
    let key = fs::read(tmp.path().join("audit/public.key")).unwrap();
    let raw = parse_public_key(&key).unwrap();
    assert_ok(&verify(tmp.path(), Some(&raw), &mut |_| {}).unwrap());
    assert!(matches!(
        verify(tmp.path(), Some(b"nope"), &mut |_| {}),
        Err(AuditError::BadPublicKey)
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(verify(empty.path(), None, &mut |_| {}).is_err());
}
