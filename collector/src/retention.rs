//! Retention by age: whole audit segments whose records are all older than the retention
//! period are removed (through the writer, which first signs a checkpoint recording the new
//! first seq and its predecessor hash, so `audit verify` still passes), and the index drops
//! the same seqs, so search and the audit log keep agreeing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::audit::{AuditError, AuditWriter, read_records, unix_nanos};

/// The seq to keep from so that only segments entirely older than `cutoff_nanos` go:
/// a segment may go when the next segment's first record is already older than the cutoff.
pub fn keep_from_seq(data_dir: &Path, cutoff_nanos: i64) -> Result<Option<u64>, AuditError> {
    let segments = crate::audit::segment_first_seqs(data_dir)?;
    let mut keep_from = None;
    for next_first in segments.iter().skip(1) {
        let mut reader = read_records(data_dir, *next_first);
        match reader.next_record()? {
            Some(r) if r.ingest_ts_nanos < cutoff_nanos => keep_from = Some(*next_first),
            _ => break,
        }
    }
    Ok(keep_from)
}

/// Applies retention every `every` until `stop` flips. `index_floor` tells the indexer to
/// delete documents below the new first seq.
pub async fn run(
    writer: Arc<AuditWriter>,
    data_dir: std::path::PathBuf,
    retention: Duration,
    every: Duration,
    index_floor: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let cutoff = unix_nanos(SystemTime::now() - retention);
        let dir = data_dir.clone();
        match tokio::task::spawn_blocking(move || keep_from_seq(&dir, cutoff)).await {
            Ok(Ok(Some(seq))) => match writer.retain(seq).await {
                Ok(removed) => {
                    index_floor.fetch_max(seq, Ordering::SeqCst);
                    if removed > 0 {
                        tracing::info!(
                            removed,
                            first_seq = seq,
                            "Retention removed old audit segments."
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Retention failed; will try again."),
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Retention could not read the audit log."),
            Err(e) => tracing::warn!(error = %e, "Retention task failed."),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditOptions, verify};

    #[tokio::test]
    async fn old_segments_go_and_the_log_still_verifies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = AuditOptions {
            segment_max_bytes: 2048,
            ..AuditOptions::default()
        };
        let mut log = AuditLog::open(dir.path(), options).expect("open");
        let now = unix_nanos(SystemTime::now());
        let hour = 3_600_000_000_000i64;
        let line = |i: usize| {
            format!("level=info msg=\"old line {i}\" pad={}", "x".repeat(200)).into_bytes()
        };
        for b in 0..6 {
            let lines: Vec<Vec<u8>> = (0..5).map(|i| line(b * 5 + i)).collect();
            log.append_batch(&format!("old-{b}"), "a", now - 2 * hour, &lines)
                .expect("append");
        }
        log.append_batch("new", "a", now, &[b"level=info msg=new".to_vec()])
            .expect("append");
        log.sync().expect("sync");
        let segments_before = crate::audit::segment_first_seqs(dir.path())
            .expect("list")
            .len();
        assert!(
            segments_before > 3,
            "the test needs several segments, got {segments_before}"
        );

        let keep = keep_from_seq(dir.path(), now - hour)
            .expect("scan")
            .expect("something is old");
        assert!(keep > 0 && keep <= 30, "keep from {keep}");
        let writer = AuditWriter::spawn(log).expect("writer");
        let removed = writer.retain(keep).await.expect("retain");
        assert!(removed > 0);
        writer.shutdown().await.expect("shutdown");
        let after = crate::audit::segment_first_seqs(dir.path()).expect("list");
        assert_eq!(after.first(), Some(&keep));
        let report = verify(dir.path(), None, &mut |_| {}).expect("verify runs");
        assert!(report.is_ok(), "{report}");
        // The newest segment is never removed, however old.
        let later = keep_from_seq(dir.path(), now + hour).expect("scan");
        assert!(later.is_none_or(|k| k >= keep), "{later:?}");
    }
}
