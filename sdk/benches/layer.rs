//! Cost of one event on the calling thread: the spoor layer (format into the queue, a
//! worker writing to a Unix socket whose reader discards) beside `tracing_subscriber::fmt`
//! writing through `tracing_appender::non_blocking` to `io::sink()`. The event is a typical
//! one: a message and 5 fields.
//!
//! Run: `cargo bench -p spoor-sdk --bench layer`. Besides criterion's figures it prints
//! ns/event from a plain timed loop for both, their ratio, and the per-event latency
//! percentiles of 8 threads logging a burst at once (queue overflow spills to a temp dir).

use std::hint::black_box;
use std::io::Read as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use spoor_sdk::config::AgentAddr;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;

fn log_one(i: u64) {
    tracing::info!(
        user = "ada",
        amount = i,
        ok = true,
        latency_ms = 3.5,
        path = "/api/v1/charge",
        "charge done"
    );
}

/// A Unix socket that reads and discards everything, standing in for the agent.
fn discarding_agent(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind bench socket");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
}

fn spoor_dispatch(dir: &Path, queue: usize) -> (Dispatch, spoor_sdk::Guard) {
    let mut config = spoor_sdk::Config::default();
    config.agent = AgentAddr::Unix(dir.join("agent.sock"));
    config.spill.dir = dir.join("spill");
    config.version = Some("1.4.2".into());
    config.task.task = Some("bench".into());
    config.panic_hook = false;
    config.queue_capacity = queue;
    let (layer, guard) = spoor_sdk::spoor_layer(config).expect("layer");
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        guard,
    )
}

fn fmt_dispatch() -> (Dispatch, tracing_appender::non_blocking::WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking(std::io::sink());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    (Dispatch::new(subscriber), guard)
}

fn bench_layer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    discarding_agent(&dir.path().join("agent.sock"));
    let (spoor, spoor_guard) = spoor_dispatch(dir.path(), 8192);
    let (fmt, fmt_guard) = fmt_dispatch();
    let mut group = c.benchmark_group("event_5_fields");
    group.bench_function("spoor_layer", |b| {
        tracing::dispatcher::with_default(&spoor, || {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                log_one(black_box(i));
            })
        })
    });
    group.bench_function("fmt_non_blocking_baseline", |b| {
        tracing::dispatcher::with_default(&fmt, || {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                log_one(black_box(i));
            })
        })
    });
    group.finish();
    drop(spoor_guard);
    drop(fmt_guard);
}

/// CPU time the calling thread has used, in nanoseconds: unlike wall time it leaves out
/// the time the thread sat descheduled while other work (the worker, a build) ran on this
/// 2-core machine.
fn thread_cpu_ns() -> u128 {
    // The first field of schedstat is the thread's time on a CPU in nanoseconds (Linux).
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("read schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field")
}

/// Wall and calling-thread CPU ns/event over `n` events logged back to back, after a
/// warm-up.
fn timed_loop(dispatch: &Dispatch, n: u64) -> (f64, f64) {
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..n / 10 {
            log_one(i);
        }
        // Let the worker drain the warm-up so both start from an empty queue.
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        for i in 0..n {
            log_one(black_box(i));
        }
        let cpu = (thread_cpu_ns() - cpu_start) as f64 / n as f64;
        (start.elapsed().as_nanos() as f64 / n as f64, cpu)
    })
}

/// Per-event latency percentiles (ns) of 8 threads logging `per_thread` events each at once.
fn burst(dispatch: &Dispatch, per_thread: u64) -> (u64, u64, u64) {
    let mut all: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dispatch = dispatch.clone();
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        (0..per_thread)
                            .map(|i| {
                                let t = Instant::now();
                                log_one(i);
                                t.elapsed().as_nanos() as u64
                            })
                            .collect::<Vec<u64>>()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("burst thread"))
            .collect()
    });
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (pct(0.50), pct(0.99), pct(0.999))
}

fn manual_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    discarding_agent(&dir.path().join("agent.sock"));
    let n = 200_000;
    let (spoor, spoor_guard) = spoor_dispatch(dir.path(), 8192);
    let (spoor_ns, spoor_cpu) = timed_loop(&spoor, n);
    let report = spoor_guard.flush();
    let (fmt, fmt_guard) = fmt_dispatch();
    let (fmt_ns, fmt_cpu) = timed_loop(&fmt, n);
    println!("\n== calling-thread cost of one event with 5 fields ({n} events) ==");
    println!("                                  wall ns/event   thread CPU ns/event");
    println!("spoor layer:                     {spoor_ns:10.1} {spoor_cpu:16.1}   ({report})");
    println!("fmt + non_blocking (baseline):   {fmt_ns:10.1} {fmt_cpu:16.1}");
    println!(
        "ratio spoor / baseline:          {:10.2} {:16.2}",
        spoor_ns / fmt_ns,
        spoor_cpu / fmt_cpu
    );
    drop(fmt_guard);
    drop(spoor_guard);

    let burst_dir = tempfile::tempdir().expect("tempdir");
    discarding_agent(&burst_dir.path().join("agent.sock"));
    let (spoor, guard) = spoor_dispatch(burst_dir.path(), 8192);
    let (p50, p99, p999) = burst(&spoor, 50_000);
    let report = guard.flush();
    println!("\n== burst: 8 threads x 50000 events at once, spoor layer ==");
    println!("per event: p50 {p50} ns, p99 {p99} ns, p99.9 {p999} ns");
    println!("outcome: {report}");
    drop(guard);
    let (fmt, fmt_guard) = fmt_dispatch();
    let (p50, p99, p999) = burst(&fmt, 50_000);
    println!(
        "baseline fmt + non_blocking (drops when full): p50 {p50} ns, p99 {p99} ns, p99.9 {p999} ns"
    );
    drop(fmt_guard);
}

criterion_group!(benches, bench_layer);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    manual_report();
}
