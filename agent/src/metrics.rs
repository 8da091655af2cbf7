//! The agent's counters: plain atomics shared by every stage, rendered as Prometheus text
//! by [`crate::admin`]. Counters only go up; gauges of the buffer are read from the buffer
//! at scrape time, not kept here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::BufferStats;

/// Where a line came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    Tcp,
    Unix,
    File,
    Spill,
    Syslog,
}

impl InputKind {
    pub(crate) const ALL: [InputKind; 5] = [
        InputKind::Tcp,
        InputKind::Unix,
        InputKind::File,
        InputKind::Spill,
        InputKind::Syslog,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InputKind::Tcp => "tcp",
            InputKind::Unix => "unix",
            InputKind::File => "file",
            InputKind::Spill => "spill",
            InputKind::Syslog => "syslog",
        }
    }
}

/// Counters of one input.
#[derive(Debug, Default)]
pub(crate) struct InputCounters {
    pub(crate) events: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Bytes of over-long lines discarded after the cut.
    pub(crate) discarded_bytes: AtomicU64,
    pub(crate) truncated_lines: AtomicU64,
}

/// All counters of one agent.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inputs: [InputCounters; 5],
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) batches_appended: AtomicU64,
    pub(crate) events_forwarded: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) batches_forwarded: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) buffer_full: AtomicU64,
    pub(crate) disk_full: AtomicU64,
    pub(crate) buffer_errors: AtomicU64,
    pub(crate) deadlettered_batches: AtomicU64,
    pub(crate) forward_latency_micros_sum: AtomicU64,
    pub(crate) forward_latency_count: AtomicU64,
    /// Redaction counts, when redaction is on (swapped with the redactor on reload).
    pub(crate) redaction: arc_swap::ArcSwapOption<crate::redact::RedactStats>,
    /// Configuration reloads (SIGHUP) applied.
    pub(crate) config_reloads_ok: AtomicU64,
    /// Configuration reloads rejected (the old configuration stayed in force).
    pub(crate) config_reloads_error: AtomicU64,
}

pub(crate) fn inc(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    pub(crate) fn input(&self, kind: InputKind) -> &InputCounters {
        &self.inputs[kind as usize]
    }

    /// Prometheus text exposition, with buffer gauges from `buffer` when it could be read.
    pub(crate) fn render(&self, buffer: Option<&BufferStats>) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP spoor_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE spoor_agent_{name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "spoor_agent_{name}{labels} {value}");
            }
        };
        let per_input = |f: fn(&InputCounters) -> &AtomicU64| -> Vec<(String, f64)> {
            InputKind::ALL
                .iter()
                .map(|k| {
                    (
                        format!("{{input=\"{}\"}}", k.as_str()),
                        get(f(self.input(*k))) as f64,
                    )
                })
                .collect()
        };
        let one = |c: &AtomicU64| vec![(String::new(), get(c) as f64)];
        family(
            "input_events_total",
            "counter",
            "Lines received per input.",
            &per_input(|c| &c.events),
        );
        family(
            "input_bytes_total",
            "counter",
            "Bytes of lines received per input.",
            &per_input(|c| &c.bytes),
        );
        family(
            "input_truncated_lines_total",
            "counter",
            "Lines cut at max_line_bytes per input.",
            &per_input(|c| &c.truncated_lines),
        );
        family(
            "input_discarded_bytes_total",
            "counter",
            "Bytes of over-long lines discarded after the cut, per input.",
            &per_input(|c| &c.discarded_bytes),
        );
        family(
            "connections_rejected_total",
            "counter",
            "Socket connections refused at max_connections.",
            &one(&self.connections_rejected),
        );
        family(
            "batches_appended_total",
            "counter",
            "Batches written to the disk buffer.",
            &one(&self.batches_appended),
        );
        family(
            "forwarded_events_total",
            "counter",
            "Events acknowledged by the collector.",
            &one(&self.events_forwarded),
        );
        family(
            "forwarded_bytes_total",
            "counter",
            "Uncompressed bytes acknowledged by the collector.",
            &one(&self.bytes_forwarded),
        );
        family(
            "forwarded_batches_total",
            "counter",
            "Batches acknowledged by the collector.",
            &one(&self.batches_forwarded),
        );
        family(
            "duplicate_batches_total",
            "counter",
            "Batches the collector already had (acknowledged as duplicates).",
            &one(&self.duplicates),
        );
        family(
            "forward_retries_total",
            "counter",
            "Failed sends that were retried.",
            &one(&self.retries),
        );
        family(
            "dropped_events_total",
            "counter",
            "Events dropped by the full-buffer policy.",
            &one(&self.events_dropped),
        );
        family(
            "buffer_full_total",
            "counter",
            "Appends refused because the buffer was full.",
            &one(&self.buffer_full),
        );
        family(
            "disk_full_total",
            "counter",
            "Appends refused because the disk was full.",
            &one(&self.disk_full),
        );
        family(
            "buffer_errors_total",
            "counter",
            "Other disk buffer errors.",
            &one(&self.buffer_errors),
        );
        family(
            "deadlettered_batches_total",
            "counter",
            "Batches the collector refused (4xx), written to DATA_DIR/deadletter.",
            &one(&self.deadlettered_batches),
        );
        family(
            "forward_latency_seconds_sum",
            "counter",
            "Total time of successful ingest requests.",
            &[(
                String::new(),
                get(&self.forward_latency_micros_sum) as f64 / 1e6,
            )],
        );
        family(
            "forward_latency_seconds_count",
            "counter",
            "Number of successful ingest requests.",
            &one(&self.forward_latency_count),
        );
        family(
            "config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP): ok = applied, error = rejected, old configuration kept.",
            &[
                (
                    "{result=\"ok\"}".to_string(),
                    get(&self.config_reloads_ok) as f64,
                ),
                (
                    "{result=\"error\"}".to_string(),
                    get(&self.config_reloads_error) as f64,
                ),
            ],
        );
        if let Some(r) = self.redaction.load_full() {
            let rows: Vec<(String, f64)> = r
                .per_rule()
                .into_iter()
                .map(|(rule, n)| (format!("{{rule=\"{rule}\"}}"), n as f64))
                .collect();
            family(
                "redactions_total",
                "counter",
                "Values redacted, per rule.",
                &rows,
            );
            family(
                "redaction_dropped_events_total",
                "counter",
                "Events dropped by drop_event redaction rules.",
                &[(String::new(), r.dropped_events() as f64)],
            );
        }
        if let Some(s) = buffer {
            let age = s
                .oldest_unacked
                .and_then(|t| t.elapsed().ok())
                .map_or(0.0, |d| d.as_secs_f64());
            family(
                "buffer_bytes",
                "gauge",
                "Bytes of the disk buffer's segment files.",
                &[(String::new(), s.bytes as f64)],
            );
            family(
                "buffer_segments",
                "gauge",
                "Segment files of the disk buffer.",
                &[(String::new(), s.segments as f64)],
            );
            family(
                "buffer_unacked_records",
                "gauge",
                "Batches in the buffer not yet acknowledged.",
                &[(String::new(), s.records_unacked as f64)],
            );
            family(
                "buffer_oldest_unacked_age_seconds",
                "gauge",
                "Age of the oldest unacknowledged batch (0 when none).",
                &[(String::new(), age)],
            );
            family(
                "buffer_dropped_records_total",
                "counter",
                "Batches dropped unacknowledged by the drop_oldest policy.",
                &[(String::new(), s.records_dropped as f64)],
            );
            family(
                "buffer_undecryptable_records_total",
                "counter",
                "Buffered batches skipped because they failed authentication (altered, or sealed with another key).",
                &[(String::new(), s.undecryptable_records as f64)],
            );
            family(
                "buffer_quarantined_segments",
                "gauge",
                "Segments in DATA_DIR/buffer/quarantine waiting for their key.",
                &[(String::new(), s.quarantined_segments as f64)],
            );
            family(
                "buffer_quarantined_records",
                "gauge",
                "Unacknowledged batches in quarantined segments.",
                &[(String::new(), s.quarantined_records as f64)],
            );
            family(
                "buffer_restored_records_total",
                "counter",
                "Batches taken back from quarantined segments once their key was configured.",
                &[(String::new(), s.restored_records as f64)],
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        inc(&m.input(InputKind::Tcp).events, 3);
        inc(&m.retries, 1);
        let text = m.render(None);
        assert!(
            text.contains("spoor_agent_input_events_total{input=\"tcp\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("spoor_agent_forward_retries_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE spoor_agent_dropped_events_total counter\n"));
    }
}
