//! Tests of the whole buffer on real files: delivery and acks, recovery from crashes at
//! every byte, the size cap, injected disk-full errors, and a model test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::record::{FRAME_PREFIX_LEN, PAYLOAD_PREFIX_LEN};
use super::writer::SegmentFile;
use super::*;

const HOUR: Duration = Duration::from_secs(3600);

/// fsync on every append, large segments.
fn sync_config() -> BufferConfig {
    BufferConfig {
        fsync_interval: Duration::ZERO,
        ..BufferConfig::default()
    }
}

/// Frame size of `batch(i)`: 10 content bytes.
const FRAME: u64 = FRAME_PREFIX_LEN + PAYLOAD_PREFIX_LEN as u64 + 10;

/// Segments that hold exactly three `batch(i)` records.
fn three_per_segment() -> BufferConfig {
    BufferConfig {
        max_segment_bytes: HEADER_LEN + 3 * FRAME,
        ..sync_config()
    }
}

fn batch(i: u64) -> Vec<u8> {
    format!("msg=b{i:05}").into_bytes()
}

fn open(dir: &Path, config: BufferConfig) -> DiskBuffer {
    DiskBuffer::open(dir, config).unwrap()
}

/// Simulates kill -9: no destructor, no final fsync (the page cache survives).
fn crash(buffer: DiskBuffer) {
    std::mem::forget(buffer);
}

fn drain(buffer: &mut DiskBuffer) -> Vec<(u64, Vec<u8>)> {
    buffer.flush_and_sync().unwrap();
    std::iter::from_fn(|| buffer.next_unsent().unwrap()).collect()
}

fn drain_ids(buffer: &mut DiskBuffer) -> Vec<u64> {
    drain(buffer).into_iter().map(|(id, _)| id).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(BUFFER_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "buf"))
        .collect();
    files.sort();
    files
}

fn copy_buffer_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.join(BUFFER_DIR)).unwrap();
    for entry in fs::read_dir(from.join(BUFFER_DIR)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(BUFFER_DIR).join(entry.file_name())).unwrap();
    }
}

#[test]
fn round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), sync_config());
    let ids: Vec<u64> = (1..=3).map(|i| buffer.append(&batch(i)).unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(buffer.durable_id(), 3);
    let got = drain(&mut buffer);
    assert_eq!(got, (1..=3).map(|i| (i, batch(i))).collect::<Vec<_>>());
    assert_eq!(buffer.next_unsent().unwrap(), None);
    // An empty batch is a valid record too.
    let id = buffer.append(b"").unwrap();
    assert_eq!(buffer.next_unsent().unwrap(), Some((id, Vec::new())));
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("buffer/segment-00000000000000000000.buf"));
}

#[test]
fn records_are_handed_out_only_once_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(
        dir.path(),
        BufferConfig {
            fsync_interval: HOUR,
            ..BufferConfig::default()
        },
    );
    assert_eq!(buffer.sync_deadline(), None);
    let id = buffer.append(b"x=1").unwrap();
    assert_eq!(buffer.durable_id(), 0);
    assert_eq!(buffer.next_unsent().unwrap(), None);
    let deadline = buffer.sync_deadline().unwrap();
    assert!(!buffer.maybe_sync(Instant::now()).unwrap());
    assert!(buffer.maybe_sync(deadline).unwrap());
    assert_eq!(buffer.durable_id(), id);
    assert_eq!(buffer.sync_deadline(), None);
    assert_eq!(buffer.next_unsent().unwrap(), Some((id, b"x=1".to_vec())));
}

#[test]
fn reader_follows_the_writer_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=10 {
        assert_eq!(buffer.append(&batch(i)).unwrap(), i);
        assert_eq!(buffer.next_unsent().unwrap(), Some((i, batch(i))));
        assert_eq!(buffer.next_unsent().unwrap(), None);
    }
    assert_eq!(segment_files(dir.path()).len(), 4);
}

#[test]
fn out_of_order_acks_delete_a_segment_only_when_all_its_records_are_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=7 {
        buffer.append(&batch(i)).unwrap();
    }
    assert_eq!(drain_ids(&mut buffer), (1..=7).collect::<Vec<_>>());
    let first = segment_files(dir.path())[0].clone();
    assert_eq!(segment_files(dir.path()).len(), 3);

    buffer.ack(3).unwrap();
    buffer.ack(5).unwrap();
    buffer.ack(1).unwrap();
    assert!(first.exists(), "record 2 is still unacked");
    assert_eq!(buffer.stats().records_unacked, 4);
    buffer.ack(2).unwrap();
    assert!(!first.exists());
    assert_eq!(segment_files(dir.path()).len(), 2);

    // Acking the whole newest segment keeps it: it is the one being written.
    buffer.ack_many([7, 6, 4]).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(buffer.stats().records_unacked, 0);
    // Repeated and unknown acks are ignored.
    buffer.ack(2).unwrap();
    buffer.ack(99).unwrap();
    // The ledger stays compact.
    assert_eq!(buffer.ledger.done_through(), 7);
    assert_eq!(buffer.ledger.sparse_len(), 0);
}

#[test]
fn reopen_redelivers_exactly_the_unacked_records() {
    for clean_close in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = open(dir.path(), three_per_segment());
        for i in 1..=8 {
            buffer.append(&batch(i)).unwrap();
        }
        assert_eq!(drain(&mut buffer).len(), 8);
        buffer.ack_many([2, 4, 5, 6, 8]).unwrap();
        if clean_close {
            drop(buffer);
        } else {
            crash(buffer);
        }
        let mut buffer = open(dir.path(), three_per_segment());
        let got = drain(&mut buffer);
        assert_eq!(got, [1, 3, 7].map(|i| (i, batch(i))).to_vec());
        assert_eq!(buffer.stats().records_unacked, 3);
        // New records continue the numbering.
        assert_eq!(buffer.append(&batch(9)).unwrap(), 9);
        buffer.ack_many([1, 3, 7, 9]).unwrap();
        drop(buffer);
        let mut buffer = open(dir.path(), three_per_segment());
        assert_eq!(drain_ids(&mut buffer), Vec::<u64>::new());
    }
}

#[test]
fn ids_are_not_reused_after_everything_was_acked_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=4 {
        buffer.append(&batch(i)).unwrap();
    }
    drain(&mut buffer);
    buffer.ack_many(1..=4).unwrap();
    drop(buffer);
    // Even without any segment left (say someone removed them), the ledger keeps the
    // numbering going.
    for f in segment_files(dir.path()) {
        fs::remove_file(f).unwrap();
    }
    let mut buffer = open(dir.path(), three_per_segment());
    assert_eq!(buffer.append(&batch(5)).unwrap(), 5);
}

/// Writes five records, acks the first two, then cuts a copy of the segment at every byte
/// offset (a write torn anywhere) and checks what a reopen recovers.
#[test]
fn torn_write_at_every_offset_loses_no_complete_record() {
    let src = tempfile::tempdir().unwrap();
    let mut buffer = open(src.path(), sync_config());
    for i in 1..=5 {
        buffer.append(&batch(i)).unwrap();
    }
    drain(&mut buffer);
    buffer.ack_many([1, 2]).unwrap();
    crash(buffer);
    let segment = segment_files(src.path()).remove(0);
    let bytes = fs::read(&segment).unwrap();
    let full_len = bytes.len() as u64;
    assert_eq!(full_len, HEADER_LEN + 5 * FRAME);
    let last_start = full_len - FRAME;

    for cut in 0..=full_len {
        let dst = tempfile::tempdir().unwrap();
        copy_buffer_dir(src.path(), dst.path());
        let torn = dst
            .path()
            .join(BUFFER_DIR)
            .join(segment.file_name().unwrap());
        OpenOptions::new()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let mut buffer = open(dst.path(), sync_config());
        let complete = if cut < HEADER_LEN {
            0
        } else {
            (cut - HEADER_LEN) / FRAME
        };
        let expected: Vec<(u64, Vec<u8>)> = (3..=complete).map(|i| (i, batch(i))).collect();
        assert_eq!(drain(&mut buffer), expected, "cut at {cut}");
        let stats = buffer.stats();
        let dropped = if cut < HEADER_LEN {
            cut
        } else {
            cut - HEADER_LEN - complete * FRAME
        };
        assert_eq!(stats.torn_tail_bytes_dropped, dropped, "cut at {cut}");
        assert_eq!(stats.corrupt_records, 0);
        if cut >= last_start {
            assert_eq!(fs::metadata(&torn).unwrap().len(), cut - dropped);
        }

        // The buffer keeps working, and the next reopen sees old and new records.
        let id = buffer.append(b"after").unwrap();
        assert_eq!(id, complete.max(2) + 1, "cut at {cut}");
        crash(buffer);
        let mut buffer = open(dst.path(), sync_config());
        let mut expected = expected;
        expected.push((id, b"after".to_vec()));
        assert_eq!(drain(&mut buffer), expected, "cut at {cut}, second reopen");
        assert_eq!(buffer.stats().torn_tail_bytes_dropped, 0);
    }
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = open(dir.path(), sync_config());
        for i in 1..=3 {
            buffer.append(&batch(i)).unwrap();
        }
        drain(&mut buffer);
        buffer.ack(1).unwrap();
        crash(buffer);
        let len = 1 + next() % 200;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 4 == 0 && garbage.len() >= 8 {
            // A plausible length field pointing past the end of the file.
            garbage[0..4].copy_from_slice(&40u32.to_le_bytes());
        }
        let segment = segment_files(dir.path()).remove(0);
        let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
        Write::write_all(&mut f, &garbage).unwrap();

        let mut buffer = open(dir.path(), sync_config());
        assert_eq!(
            drain(&mut buffer),
            [2, 3].map(|i| (i, batch(i))).to_vec(),
            "round {round}"
        );
        assert_eq!(buffer.stats().torn_tail_bytes_dropped, len);
        assert_eq!(buffer.append(b"more").unwrap(), 4);
    }
}

#[test]
fn corrupt_record_in_a_finished_segment_skips_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=7 {
        buffer.append(&batch(i)).unwrap();
    }
    crash(buffer);
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    // Flip one content byte of record 2.
    let at = (HEADER_LEN + FRAME + FRAME - 1) as usize;
    bytes[at] ^= 0x40;
    fs::write(&first, &bytes).unwrap();

    let mut buffer = open(dir.path(), three_per_segment());
    assert_eq!(drain_ids(&mut buffer), [1, 4, 5, 6, 7]);
    let stats = buffer.stats();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.torn_tail_bytes_dropped, 0);
    // Once its readable records are acked, the damaged segment goes too.
    buffer.ack(1).unwrap();
    assert!(!first.exists());
}

#[test]
fn unreadable_segment_header_moves_the_segment_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=7 {
        buffer.append(&batch(i)).unwrap();
    }
    crash(buffer);
    let files = segment_files(dir.path());
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[3] = b'X';
    fs::write(&files[1], &bytes).unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    assert_eq!(drain_ids(&mut buffer), [1, 2, 3, 7]);
    assert_eq!(buffer.stats().corrupt_records, 1);
    assert!(files[1].with_extension("buf.corrupt").exists());
    assert_eq!(buffer.append(&batch(8)).unwrap(), 8);
}

#[test]
fn unknown_format_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), sync_config());
    buffer.append(b"a").unwrap();
    drop(buffer);
    let file = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&file).unwrap();
    bytes[8] = 9;
    let crc = crc32fast::hash(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(&file, &bytes).unwrap();
    let err = DiskBuffer::open(dir.path(), sync_config()).unwrap_err();
    assert!(
        matches!(err, BufferError::UnsupportedFormat { version: 9, .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(&file).unwrap(), bytes);
}

#[test]
fn half_created_segment_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), sync_config());
    buffer.append(b"a").unwrap();
    drop(buffer);
    let tmp = dir
        .path()
        .join(BUFFER_DIR)
        .join("segment-00000000000000000001.buf.tmp");
    fs::write(&tmp, b"SPOOR").unwrap();
    let mut buffer = open(dir.path(), sync_config());
    assert!(!tmp.exists());
    assert_eq!(drain_ids(&mut buffer), [1]);
}

#[test]
fn ledger_crash_between_temp_write_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), sync_config());
    for i in 1..=4 {
        buffer.append(&batch(i)).unwrap();
    }
    drain(&mut buffer);
    buffer.ack(1).unwrap();
    crash(buffer);
    // The ack of 2 and 3 wrote its temp file, then the process died before the rename.
    let buffer_dir = dir.path().join(BUFFER_DIR);
    fs::write(
        buffer_dir.join("ledger.json.tmp"),
        br#"{"version":1,"done_through":3,"acked":[]}"#,
    )
    .unwrap();
    let mut buffer = open(dir.path(), sync_config());
    assert_eq!(drain_ids(&mut buffer), [2, 3, 4]);
    assert!(!buffer_dir.join("ledger.json.tmp").exists());
    crash(buffer);
    // A torn temp file is no better.
    fs::write(buffer_dir.join("ledger.json.tmp"), br#"{"version":1,"do"#).unwrap();
    let mut buffer = open(dir.path(), sync_config());
    assert_eq!(drain_ids(&mut buffer), [2, 3, 4]);
}

#[test]
fn crash_between_ledger_update_and_unlink_deletes_the_segment_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    for i in 1..=5 {
        buffer.append(&batch(i)).unwrap();
    }
    drain(&mut buffer);
    let first = segment_files(dir.path()).remove(0);
    let saved = fs::read(&first).unwrap();
    buffer.ack_many([1, 2, 3]).unwrap();
    assert!(!first.exists());
    crash(buffer);
    // As if the unlink never reached the disk.
    fs::write(&first, &saved).unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    assert!(!first.exists());
    assert_eq!(drain_ids(&mut buffer), [4, 5]);
}

#[test]
fn full_buffer_refuses_and_drop_oldest_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let config = BufferConfig {
        max_total_bytes: 2 * (HEADER_LEN + 3 * FRAME),
        ..three_per_segment()
    };
    let mut buffer = open(dir.path(), config.clone());
    for i in 1..=6 {
        buffer.append(&batch(i)).unwrap();
    }
    let err = buffer.append(&batch(7)).unwrap_err();
    let BufferError::Full { needed, used, max } = err else {
        panic!("expected Full, got {err:?}");
    };
    assert_eq!(
        (needed, used, max),
        (
            HEADER_LEN + FRAME,
            config.max_total_bytes,
            config.max_total_bytes
        )
    );
    assert_eq!(
        buffer.stats().next_record_id,
        7,
        "a refused append uses no id"
    );

    assert_eq!(buffer.next_unsent().unwrap().map(|r| r.0), Some(1));
    assert_eq!(
        buffer.drop_oldest_unacked().unwrap(),
        Some(HEADER_LEN + 3 * FRAME)
    );
    let stats = buffer.stats();
    assert_eq!(
        (stats.records_dropped, stats.records_unacked, stats.segments),
        (3, 3, 1)
    );
    assert_eq!(buffer.append(&batch(7)).unwrap(), 7);
    // A late ack for a dropped record is harmless.
    buffer.ack(1).unwrap();
    assert_eq!(drain_ids(&mut buffer), [4, 5, 6, 7]);

    // Dropping when the only pending records are in the active segment starts a new one.
    buffer.ack_many([4, 5, 6]).unwrap();
    assert_eq!(
        buffer.drop_oldest_unacked().unwrap(),
        Some(HEADER_LEN + FRAME)
    );
    assert_eq!(buffer.drop_oldest_unacked().unwrap(), None);
    drop(buffer);
    let mut buffer = open(dir.path(), config);
    assert_eq!(drain_ids(&mut buffer), Vec::<u64>::new());
    assert_eq!(buffer.append(&batch(8)).unwrap(), 8);
}

#[test]
fn oversized_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = open(dir.path(), three_per_segment());
    let err = buffer.append(&[b'x'; 200]).unwrap_err();
    assert!(matches!(err, BufferError::RecordTooLarge { .. }), "{err:?}");
    assert_eq!(buffer.append(&batch(1)).unwrap(), 1);
}

#[test]
fn stats_report_sizes_and_the_oldest_unacked_record() {
    let dir = tempfile::tempdir().unwrap();
    let before = SystemTime::now() - Duration::from_millis(5);
    let mut buffer = open(dir.path(), three_per_segment());
    let empty = buffer.stats();
    assert_eq!(
        (empty.bytes, empty.segments, empty.records_unacked),
        (HEADER_LEN, 1, 0)
    );
    assert_eq!(empty.oldest_unacked, None);
    for i in 1..=4 {
        buffer.append(&batch(i)).unwrap();
    }
    let stats = buffer.stats();
    assert_eq!(stats.bytes, 2 * HEADER_LEN + 4 * FRAME);
    assert_eq!(
        (stats.segments, stats.records_unacked, stats.durable_id),
        (2, 4, 4)
    );
    let oldest = stats.oldest_unacked.unwrap();
    assert!(oldest >= before && oldest <= SystemTime::now());
}

// ---- injected disk-full errors ----

#[derive(Debug, Default)]
struct Faults {
    /// Writes put half their bytes on disk, then fail with ENOSPC.
    write: AtomicBool,
    sync: AtomicBool,
    create: AtomicBool,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

struct FaultyFile {
    inner: File,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.faults.write.load(Ordering::SeqCst) {
            Write::write_all(&mut self.inner, &buf[..buf.len() / 2])?;
            return Err(enospc());
        }
        Write::write_all(&mut self.inner, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.faults.sync.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        SegmentFile::truncate(&mut self.inner, len)
    }
}

struct FaultyIo(Arc<Faults>);

impl SegmentIo for FaultyIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        if self.0.create.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        let inner = File::create(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: self.0.clone(),
        }))
    }

    fn open_at(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut inner = OpenOptions::new().write(true).open(path)?;
        io::Seek::seek(&mut inner, io::SeekFrom::Start(len))?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: self.0.clone(),
        }))
    }
}

fn open_faulty(dir: &Path, config: BufferConfig) -> (DiskBuffer, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let buffer = DiskBuffer::open_with_io(
        dir,
        config,
        Arc::new(PlainCipher),
        Arc::new(FaultyIo(faults.clone())),
    )
    .unwrap();
    (buffer, faults)
}

#[test]
fn failed_write_is_disk_full_and_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, faults) = open_faulty(dir.path(), sync_config());
    buffer.append(&batch(1)).unwrap();
    let len_before = fs::metadata(&segment_files(dir.path())[0]).unwrap().len();

    faults.write.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let err = buffer.append(&batch(2)).unwrap_err();
        assert!(matches!(err, BufferError::DiskFull { .. }), "{err:?}");
        assert_eq!(
            fs::metadata(&segment_files(dir.path())[0]).unwrap().len(),
            len_before
        );
    }
    // Still readable while the disk is full.
    assert_eq!(buffer.next_unsent().unwrap(), Some((1, batch(1))));

    faults.write.store(false, Ordering::SeqCst);
    assert_eq!(buffer.append(&batch(2)).unwrap(), 2);
    crash(buffer);
    let mut buffer = open(dir.path(), sync_config());
    assert_eq!(drain(&mut buffer), [1, 2].map(|i| (i, batch(i))).to_vec());
    let stats = buffer.stats();
    assert_eq!(
        (stats.torn_tail_bytes_dropped, stats.corrupt_records),
        (0, 0)
    );
}

#[test]
fn failed_fsync_in_append_rolls_the_record_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, faults) = open_faulty(dir.path(), sync_config());
    buffer.append(&batch(1)).unwrap();
    faults.sync.store(true, Ordering::SeqCst);
    let err = buffer.append(&batch(2)).unwrap_err();
    assert!(matches!(err, BufferError::DiskFull { .. }), "{err:?}");
    assert_eq!(buffer.durable_id(), 1);
    faults.sync.store(false, Ordering::SeqCst);
    assert_eq!(buffer.append(&batch(3)).unwrap(), 2);
    drop(buffer);
    let mut buffer = open(dir.path(), sync_config());
    assert_eq!(drain(&mut buffer), vec![(1, batch(1)), (2, batch(3))]);
}

#[test]
fn failed_group_commit_keeps_the_pending_records_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let config = BufferConfig {
        fsync_interval: HOUR,
        ..BufferConfig::default()
    };
    let (mut buffer, faults) = open_faulty(dir.path(), config.clone());
    for i in 1..=3 {
        buffer.append(&batch(i)).unwrap();
    }
    faults.sync.store(true, Ordering::SeqCst);
    let err = buffer.flush_and_sync().unwrap_err();
    assert!(matches!(err, BufferError::DiskFull { .. }), "{err:?}");
    assert_eq!(buffer.durable_id(), 0);
    assert_eq!(buffer.next_unsent().unwrap(), None, "nothing durable yet");
    assert!(buffer.sync_deadline().is_some());
    // The writes themselves can also fail now; the pending records stay in memory.
    faults.write.store(true, Ordering::SeqCst);
    assert!(matches!(
        buffer.append(&batch(4)),
        Err(BufferError::DiskFull { .. })
    ));
    faults.write.store(false, Ordering::SeqCst);
    faults.sync.store(false, Ordering::SeqCst);
    assert!(buffer.maybe_sync(Instant::now() + 2 * HOUR).unwrap());
    assert_eq!(buffer.durable_id(), 3);
    assert_eq!(buffer.append(&batch(4)).unwrap(), 4);
    crash(buffer);
    let mut buffer = open(dir.path(), config);
    assert_eq!(
        drain(&mut buffer),
        (1..=4).map(|i| (i, batch(i))).collect::<Vec<_>>()
    );
    assert_eq!(buffer.stats().torn_tail_bytes_dropped, 0);
}

#[test]
fn failed_segment_creation_is_disk_full_and_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, faults) = open_faulty(dir.path(), three_per_segment());
    for i in 1..=3 {
        buffer.append(&batch(i)).unwrap();
    }
    faults.create.store(true, Ordering::SeqCst);
    assert!(matches!(
        buffer.append(&batch(4)),
        Err(BufferError::DiskFull { .. })
    ));
    assert_eq!(segment_files(dir.path()).len(), 1);
    faults.create.store(false, Ordering::SeqCst);
    assert_eq!(buffer.append(&batch(4)).unwrap(), 4);
    drop(buffer);
    let mut buffer = open(dir.path(), three_per_segment());
    assert_eq!(drain_ids(&mut buffer), [1, 2, 3, 4]);
}

// ---- model test ----

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Next,
    /// Ack the n-th (modulo) record handed out and not yet acked.
    Ack(usize),
    Sync,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..60).prop_map(Op::Append),
        4 => Just(Op::Next),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random appends, hand-outs, acks, syncs, clean reopens and crashes against a model:
    /// after every reopen the buffer hands out exactly the records never acked, with their
    /// contents, and nothing acked comes back.
    #[test]
    fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = BufferConfig {
            max_segment_bytes: 200,
            fsync_interval: HOUR,
            ..BufferConfig::default()
        };
        let mut buffer = Some(open(dir.path(), config.clone()));
        // Model: contents of records not acked; IDs handed out since open and not acked.
        let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut handed: BTreeSet<u64> = BTreeSet::new();
        let mut handed_through = 0u64;
        let mut next_id = 1u64;

        for (step, op) in ops.into_iter().enumerate() {
            let b = buffer.as_mut().unwrap();
            match op {
                Op::Append(len) => {
                    let content: Vec<u8> = (0..len).map(|i| (next_id as usize * 31 + i) as u8).collect();
                    prop_assert_eq!(b.append(&content).unwrap(), next_id);
                    pending.insert(next_id, content);
                    next_id += 1;
                }
                Op::Next => {
                    let durable = b.durable_id();
                    let expected = pending
                        .range(handed_through + 1..)
                        .next()
                        .filter(|(id, _)| **id <= durable)
                        .map(|(id, c)| (*id, c.clone()));
                    let got = b.next_unsent().unwrap();
                    prop_assert_eq!(&got, &expected, "step {}", step);
                    if let Some((id, _)) = got {
                        handed.insert(id);
                        handed_through = id;
                    }
                }
                Op::Ack(n) => {
                    if !handed.is_empty() {
                        let id = *handed.iter().nth(n % handed.len()).unwrap();
                        b.ack(id).unwrap();
                        handed.remove(&id);
                        pending.remove(&id);
                    }
                }
                Op::Sync => {
                    b.flush_and_sync().unwrap();
                    prop_assert_eq!(b.durable_id(), next_id - 1);
                }
                Op::Reopen | Op::Crash => {
                    let old = buffer.take().unwrap();
                    if matches!(op, Op::Crash) { crash(old) } else { drop(old) }
                    let mut b = open(dir.path(), config.clone());
                    let all: Vec<(u64, Vec<u8>)> = pending.iter().map(|(id, c)| (*id, c.clone())).collect();
                    prop_assert_eq!(drain(&mut b), all, "step {}", step);
                    handed = pending.keys().copied().collect();
                    handed_through = next_id - 1;
                    buffer = Some(b);
                }
            }
            let stats = buffer.as_ref().unwrap().stats();
            prop_assert_eq!(stats.records_unacked, pending.len() as u64);
            prop_assert_eq!(stats.next_record_id, next_id);
        }
        // Segments whose records are all acked are gone: at most one segment per
        // segment holding a pending record, plus the active one.
        let b = buffer.as_ref().unwrap();
        prop_assert!(b.stats().segments <= pending.len() + 1);
    }
}

// ---- the cipher hook ----

/// A toy "cipher" (XOR with the record ID) to check the hook, not for real use.
#[derive(Debug)]
struct XorCipher;

impl RecordCipher for XorCipher {
    fn new_segment(&self) -> CipherParams {
        CipherParams {
            encrypted: true,
            key_id: [0xab; 16],
            nonce_prefix: [1; 12],
        }
    }

    fn can_open(&self, params: &CipherParams) -> bool {
        !params.encrypted || params.key_id == [0xab; 16]
    }

    fn seal(&self, _params: &CipherParams, record_id: u64, plaintext: &[u8]) -> Vec<u8> {
        plaintext.iter().map(|b| b ^ record_id as u8).collect()
    }

    fn open(
        &self,
        params: &CipherParams,
        record_id: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        Ok(if params.encrypted {
            self.seal(params, record_id, sealed)
        } else {
            sealed.to_vec()
        })
    }
}

#[test]
fn sealed_segments_record_their_cipher_and_need_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer =
        DiskBuffer::open_with_cipher(dir.path(), sync_config(), Arc::new(XorCipher)).unwrap();
    buffer.append(b"secret=1").unwrap();
    drop(buffer);
    let bytes = fs::read(&segment_files(dir.path())[0]).unwrap();
    assert_eq!(&bytes[10..12], &[1, 0], "encrypted flag");
    assert_eq!(&bytes[12..28], &[0xab; 16], "key id");
    assert!(!bytes.windows(8).any(|w| w == b"secret=1"));

    // Without the key the segment goes to quarantine (with a note naming the key) and
    // the buffer carries on; with the key back, the record returns under a new ID.
    let mut buffer = DiskBuffer::open(dir.path(), sync_config()).unwrap();
    assert_eq!(buffer.restore_quarantined(|c| c).unwrap(), 0);
    assert_eq!(buffer.stats().quarantined_segments, 1);
    assert!(drain(&mut buffer).is_empty());
    drop(buffer);
    let note = dir
        .path()
        .join(BUFFER_DIR)
        .join(super::QUARANTINE_DIR)
        .join("segment-00000000000000000000.buf.json");
    let note = fs::read_to_string(note).unwrap();
    assert!(note.contains(&"ab".repeat(16)), "{note}");
    let mut buffer =
        DiskBuffer::open_with_cipher(dir.path(), sync_config(), Arc::new(XorCipher)).unwrap();
    assert_eq!(buffer.restore_quarantined(|c| c).unwrap(), 1);
    assert_eq!(drain(&mut buffer), vec![(2, b"secret=1".to_vec())]);
}

#[test]
fn a_quarantined_segment_waits_until_the_buffer_has_room_for_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = BufferConfig {
        max_segment_bytes: 4096,
        max_total_bytes: 8192,
        ..sync_config()
    };
    let xor = || -> Arc<dyn RecordCipher> { Arc::new(XorCipher) };
    let mut b = DiskBuffer::open_with_cipher(dir.path(), config.clone(), xor()).unwrap();
    for _ in 0..10 {
        b.append(&[b'q'; 300]).unwrap();
    }
    drop(b);
    // Without the key: quarantined; then plain records fill most of the buffer.
    let mut b = DiskBuffer::open(dir.path(), config.clone()).unwrap();
    for _ in 0..20 {
        b.append(&[b'p'; 300]).unwrap();
    }
    drop(b);
    // The key is back but there is no room for all ten: none is restored yet.
    let mut b = DiskBuffer::open_with_cipher(dir.path(), config.clone(), xor()).unwrap();
    assert_eq!(b.restore_quarantined(|c| c).unwrap(), 0);
    assert_eq!(b.stats().quarantined_segments, 1);
    assert_eq!(b.stats().quarantined_records, 10);
    let ids = drain_ids(&mut b);
    assert_eq!(ids.len(), 20);
    b.ack_many(ids).unwrap();
    drop(b);
    // Room again: all ten come back, once.
    let mut b = DiskBuffer::open_with_cipher(dir.path(), config, xor()).unwrap();
    assert_eq!(b.restore_quarantined(|c| c).unwrap(), 10);
    let restored = drain(&mut b);
    assert_eq!(restored.len(), 10);
    assert!(restored.iter().all(|(_, c)| c == &vec![b'q'; 300]));
    assert_eq!(b.stats().quarantined_segments, 0);
}

#[test]
fn kept_segments_survive_acks_and_reopen_until_the_mark_moves() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = open(
        dir.path(),
        BufferConfig {
            keep_from_id: Some(2),
            ..three_per_segment()
        },
    );
    for i in 1..=7 {
        assert_eq!(b.append(&batch(i)).unwrap(), i);
    }
    let ids = drain_ids(&mut b);
    b.ack_many(ids).unwrap();
    // Segments [1,2,3] and [4,5,6] are done, but hold records at or above 2.
    assert_eq!(segment_files(dir.path()).len(), 3);
    crash(b);
    let mut b = open(
        dir.path(),
        BufferConfig {
            keep_from_id: Some(5),
            ..three_per_segment()
        },
    );
    // Done records are still readable for their metadata, but never handed out again.
    let after: Vec<u64> = b
        .contents_after(4)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(after, vec![5, 6, 7]);
    assert_eq!(b.contents_after(6).unwrap(), vec![(7, batch(7))]);
    assert!(drain_ids(&mut b).is_empty());
    assert_eq!(segment_files(dir.path()).len(), 2, "[1,2,3] went at open");
    b.keep_from(None);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn deferred_acks_reach_the_ledger_with_the_next_sync_or_a_finished_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = BufferConfig {
        fsync_interval: Duration::from_secs(3600),
        ..three_per_segment()
    };
    let mut buffer = open(dir.path(), config.clone());
    for i in 1..=5 {
        buffer.append(&batch(i)).unwrap();
    }
    assert_eq!(drain_ids(&mut buffer), vec![1, 2, 3, 4, 5]);
    // An ack in memory only: a crash now means that record is sent again.
    buffer.ack_deferred([4]).unwrap();
    assert!(buffer.sync_deadline().is_some(), "the ack waits for a sync");
    crash(buffer);
    let mut buffer = open(dir.path(), config.clone());
    assert_eq!(drain_ids(&mut buffer), vec![1, 2, 3, 4, 5]);
    // A finished segment whose records are all acked: persisted and deleted at once.
    let before = segment_files(dir.path()).len();
    buffer.ack_deferred([1, 2, 3]).unwrap();
    assert_eq!(segment_files(dir.path()).len(), before - 1);
    // Otherwise the ack is persisted once the sync is due.
    buffer.ack_deferred([5]).unwrap();
    assert!(
        buffer
            .maybe_sync(Instant::now() + Duration::from_secs(7200))
            .unwrap()
    );
    assert_eq!(buffer.sync_deadline(), None);
    crash(buffer);
    let mut buffer = open(dir.path(), config);
    assert_eq!(drain_ids(&mut buffer), vec![4]);
}
