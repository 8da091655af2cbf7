//! The cost of redaction and encryption at rest on the agent's per-line path, beside
//! both off, in the same run, over the loghub sample logs in `/work/shared/corpus/loghub`
//! (or `SPOOR_CORPUS`).
//!
//! Each iteration does what the agent does to every line between input and network:
//! decode, (redact with every built-in detector, IP addresses included,) encode, batch
//! 1000 lines into one disk buffer record (sealed with AES-256-GCM, or plain), then read
//! the records back (opened) and acknowledge them. Group commit fsyncs are left out
//! (`fsync_interval` one hour) since they cost the same either way.
//!
//! Run: `cargo bench -p spoor-agent --bench redact`. After criterion's report it prints
//! the median of interleaved timed passes of both variants and their ratio.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use spoor_agent::buffer::{BufferConfig, DiskBuffer, PlainCipher, RecordCipher};
use spoor_agent::crypto::{BufferCipher, DataKey, KeyRing};
use spoor_agent::redact::{DetectorSetting, RedactConfig, Redactor};
use spoor_sdk::event::Event;

fn corpus() -> Vec<String> {
    let dir = std::env::var_os("SPOOR_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus/loghub"));
    let mut lines = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for p in files {
        if p.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            lines.extend(text.lines().map(String::from));
        }
    }
    assert!(!lines.is_empty(), "no corpus in {}", dir.display());
    lines
}

struct Variant {
    redactor: Option<Redactor>,
    buffer: DiskBuffer,
    _dir: tempfile::TempDir,
}

impl Variant {
    fn new(on: bool) -> Self {
        Self::with(on, on)
    }

    fn with(redact: bool, encrypt: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cipher: Arc<dyn RecordCipher> = if encrypt {
            Arc::new(BufferCipher::new(KeyRing::new(
                DataKey::from_bytes([7; 32]),
                Vec::new(),
            )))
        } else {
            Arc::new(PlainCipher)
        };
        let config = BufferConfig {
            fsync_interval: Duration::from_secs(3600),
            ..BufferConfig::default()
        };
        let buffer = DiskBuffer::open_with_cipher(dir.path(), config, cipher).expect("buffer");
        let redactor = redact.then(|| {
            let mut c = RedactConfig::default();
            // SPOOR_BENCH_DEFAULT_DETECTORS=1 keeps the default set (IP addresses off).
            if std::env::var_os("SPOOR_BENCH_DEFAULT_DETECTORS").is_none() {
                c.detectors.ip = DetectorSetting::Mask;
            }
            Redactor::new(&c, dir.path()).expect("redactor")
        });
        Variant {
            redactor,
            buffer,
            _dir: dir,
        }
    }

    /// One pass over the corpus.
    fn pass(&mut self, lines: &[String]) {
        let mut batch = Vec::with_capacity(1 << 20);
        let mut n = 0;
        for line in lines {
            let (mut event, _) = Event::from_line(line.as_bytes());
            if let Some(r) = &self.redactor {
                black_box(r.apply(&mut event));
            }
            batch.extend_from_slice(event.to_line().as_bytes());
            batch.push(b'\n');
            n += 1;
            if n == 1000 {
                self.buffer.append(&batch).expect("append");
                batch.clear();
                n = 0;
            }
        }
        if n > 0 {
            self.buffer.append(&batch).expect("append");
        }
        self.buffer.flush_and_sync().expect("sync");
        let mut ids = Vec::new();
        while let Some((id, content)) = self.buffer.next_unsent().expect("read") {
            black_box(content);
            ids.push(id);
        }
        self.buffer.ack_many(ids).expect("ack");
    }
}

fn main() {
    let lines = corpus();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let mut off = Variant::new(false);
    let mut on = Variant::new(true);

    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("agent_line_path");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("redaction_and_encryption_off", |b| {
        b.iter(|| off.pass(&lines))
    });
    group.bench_function("redaction_and_encryption_on", |b| {
        b.iter(|| on.pass(&lines))
    });
    group.finish();
    c.final_summary();

    // Interleaved passes, so every variant sees the same machine load.
    let mut redact_only = Variant::with(true, false);
    let mut encrypt_only = Variant::with(false, true);
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..15 {
        for (k, v) in [&mut off, &mut on, &mut redact_only, &mut encrypt_only]
            .into_iter()
            .enumerate()
        {
            let t = Instant::now();
            v.pass(&lines);
            times[k].push(t.elapsed());
        }
    }
    let median = |t: &mut Vec<Duration>| {
        t.sort();
        t[t.len() / 2]
    };
    let [t_off, t_on, t_redact, t_encrypt] = &mut times;
    let (m_off, m_on) = (median(t_off), median(t_on));
    let (m_redact, m_encrypt) = (median(t_redact), median(t_encrypt));
    let rate = |d: Duration| lines.len() as f64 / d.as_secs_f64();
    let mb = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "corpus: {} lines, {:.1} MB; median of 15 interleaved passes",
        lines.len(),
        bytes as f64 / 1e6
    );
    println!(
        "off: {:.0} lines/s ({:.1} MB/s); on: {:.0} lines/s ({:.1} MB/s)",
        rate(m_off),
        mb(m_off),
        rate(m_on),
        mb(m_on)
    );
    println!(
        "redaction only: {:+.1}%; encryption only: {:+.1}%",
        (m_redact.as_secs_f64() / m_off.as_secs_f64() - 1.0) * 100.0,
        (m_encrypt.as_secs_f64() / m_off.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "on/off time ratio: {:.3} (cost {:+.1}%)",
        m_on.as_secs_f64() / m_off.as_secs_f64(),
        (m_on.as_secs_f64() / m_off.as_secs_f64() - 1.0) * 100.0
    );
}
