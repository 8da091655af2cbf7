//! `spoor-bench`: end-to-end throughput of the agent, side by side with syslog-ng.
//!
//! 1. Reads the lines of `CORPUS/*.log` and repeats them up to `--events` lines.
//! 2. Starts an in-process receiver that answers every `POST /api/v1/ingest` at once with
//!    `200 {"accepted":N,"duplicate":false}` and counts the lines it got (bodies are
//!    decompressed; a resent idempotency key is not counted twice).
//! 3. Starts the real agent (`--agent-bin`, default the `spoor-agent` beside this binary) as
//!    a child process with a fresh data directory, sends every line over one TCP connection
//!    to its TCP input, and waits until the receiver has them all: the lines go through
//!    the TCP input, enrichment, batching, the disk buffer (fsync every 100 ms) and
//!    forwarding. Reports events/s, MB/s (of input lines) and the agent's peak RSS
//!    (`VmHWM` of the child).
//! 4. With `--syslog-ng-relay SCRIPT` (see `shared/tools/syslog-ng-relay`), does the same
//!    through syslog-ng with a reliable disk buffer into a TCP sink, and prints the ratio.
//!
//! Progress lines go to stderr every second; the summary goes to stdout.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;

/// Throughput benchmark of the agent (and syslog-ng beside it).
#[derive(Debug, Parser)]
#[command(name = "spoor-bench")]
struct Args {
    /// Directory whose `*.log` files hold the lines to send.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/loghub"))]
    corpus: PathBuf,
    /// How many lines to send (the corpus is repeated).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The agent binary [default: `spoor-agent` beside this binary].
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// An agent config file (TOML) to pass with `--config`.
    #[arg(long)]
    agent_config: Option<PathBuf>,
    /// A second agent config to run in the same rounds as the baseline of `--agent-config`
    /// (for example `agent/bench/privacy-off.toml` beside `privacy-on.toml`); prints the
    /// throughput cost of the difference.
    #[arg(long)]
    baseline_config: Option<PathBuf>,
    /// The `syslog-ng-relay` script; without it syslog-ng is not run.
    #[arg(long)]
    syslog_ng_relay: Option<PathBuf>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Runs of each (alternating); the summary is the median by events/s.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Skip the agent run (only syslog-ng).
    #[arg(long)]
    skip_agent: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("spoor-bench: error: {e}");
        std::process::exit(1);
    }
}

type BenchResult<T> = Result<T, String>;

/// What one run measured.
struct Outcome {
    name: &'static str,
    events: u64,
    bytes: u64,
    elapsed: Duration,
    peak_rss_kib: u64,
    /// CPU time (user + system) the process used during the run.
    cpu: Duration,
}

impl Outcome {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        println!(
            "{:<10} {:>9} events in {:>7.2} s: {:>10.0} events/s, {:>7.1} MB/s, peak RSS {:>6.1} MiB, CPU {:>5.2} s ({:.2} µs/event)",
            self.name,
            self.events,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6,
            self.peak_rss_kib as f64 / 1024.0,
            self.cpu.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / self.events as f64,
        );
    }
}

fn run(args: &Args) -> BenchResult<()> {
    let payload = build_payload(&args.corpus, args.events)?;
    println!(
        "payload: {} lines, {:.1} MB from {}",
        args.events,
        payload.len() as f64 / 1e6,
        args.corpus.display()
    );
    println!(
        "machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into())
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut agent_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut sng_runs = Vec::new();
    // Rounds alternate agent and syslog-ng so that both see the same background load.
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        if !args.skip_agent {
            let r = run_agent(
                args,
                args.agent_config.as_deref(),
                "agent",
                &payload,
                timeout,
            )?;
            r.print();
            agent_runs.push(r);
        }
        if let Some(baseline) = &args.baseline_config {
            let r = run_agent(args, Some(baseline), "baseline", &payload, timeout)?;
            r.print();
            baseline_runs.push(r);
        }
        if let Some(script) = &args.syslog_ng_relay {
            let r = run_syslog_ng(script, &payload, args.events, timeout)?;
            r.print();
            sng_runs.push(r);
        }
    }
    let agent = median(&mut agent_runs);
    let baseline = median(&mut baseline_runs);
    let sng = median(&mut sng_runs);
    if args.rounds > 1 {
        println!("median of {} rounds:", args.rounds);
        for r in agent.iter().chain(baseline.iter()).chain(sng.iter()) {
            r.print();
        }
    }
    if let (Some(a), Some(b)) = (&agent, &baseline) {
        let ratio = a.events_per_sec() / b.events_per_sec();
        let cpu_ratio = a.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-9);
        println!(
            "ratio: agent / baseline = {ratio:.2}x events/s (cost {:.0}%), {cpu_ratio:.2}x CPU per event",
            (1.0 - ratio) * 100.0
        );
    }
    if let (Some(a), Some(s)) = (&agent, &sng) {
        let ratio = a.events_per_sec() / s.events_per_sec();
        let peak = agent_runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        println!(
            "ratio: agent / syslog-ng = {ratio:.2}x (target >= 3x); agent peak RSS {:.1} MiB over all rounds (target < 50 MiB)",
            peak as f64 / 1024.0
        );
    }
    Ok(())
}

/// The run with the median events/s (the upper one of an even count).
fn median(runs: &mut [Outcome]) -> Option<Outcome> {
    runs.sort_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()));
    let m = runs.get(runs.len() / 2)?;
    Some(Outcome {
        name: m.name,
        events: m.events,
        bytes: m.bytes,
        elapsed: m.elapsed,
        peak_rss_kib: m.peak_rss_kib,
        cpu: m.cpu,
    })
}

/// The corpus lines (non-empty, without CR), repeated to `events` lines.
fn build_payload(dir: &Path, events: u64) -> BenchResult<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in &files {
        let text = std::fs::read(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line.to_vec());
            }
        }
    }
    if lines.is_empty() {
        return Err(format!("no lines in {}/*.log", dir.display()));
    }
    let mut out = Vec::new();
    for i in 0..events {
        let idx = usize::try_from(i).map_err(|e| e.to_string())? % lines.len();
        out.extend_from_slice(&lines[idx]);
        out.push(b'\n');
    }
    Ok(out)
}

fn free_port() -> BenchResult<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (fields 14
/// and 15, in clock ticks of 1/100 s, the value on every Linux this runs on).
fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the `)`, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Kills the child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `payload` over one connection in a thread, counting the bytes written.
fn send_in_background(
    addr: SocketAddr,
    payload: Arc<Vec<u8>>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<BenchResult<()>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        for chunk in payload.chunks(256 * 1024) {
            s.write_all(chunk)
                .map_err(|e| format!("sending to {addr}: {e}"))?;
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        s.flush().map_err(|e| format!("sending to {addr}: {e}"))?;
        Ok(())
    })
}

/// Waits until `delivered` reaches `events`, printing progress every second and tracking
/// the peak RSS of `pid`. Returns the elapsed time since `start` and the peak RSS (KiB).
#[allow(clippy::too_many_arguments)]
fn watch_progress(
    name: &str,
    pid: u32,
    child: &mut Child,
    start: Instant,
    events: u64,
    total_bytes: u64,
    sent: &AtomicU64,
    delivered: &AtomicU64,
    timeout: Duration,
) -> BenchResult<(Duration, u64, Duration)> {
    let mut peak = 0;
    let mut last_print = Instant::now();
    let mut last_delivered = 0;
    loop {
        let got = delivered.load(Ordering::Relaxed);
        let (hwm, rss) = rss_kib(pid);
        peak = peak.max(hwm);
        if got >= events {
            let elapsed = start.elapsed();
            return Ok((elapsed, peak.max(rss_kib(pid).0), cpu_time(pid)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited early with {status}"));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{name}: timed out after {timeout:?} with {got} of {events} events delivered"
            ));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let rate = (got - last_delivered) as f64 / last_print.elapsed().as_secs_f64();
            eprintln!(
                "[{name} {:>6.1}s] sent {:>5.1}% of bytes, delivered {got}/{events} events ({rate:.0}/s), RSS {:.1} MiB (peak {:.1})",
                start.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed) as f64 * 100.0 / total_bytes as f64,
                rss as f64 / 1024.0,
                peak as f64 / 1024.0,
            );
            last_print = Instant::now();
            last_delivered = got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// State of the acknowledging receiver.
#[derive(Default)]
struct Receiver {
    events: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

async fn ingest(
    axum::extract::State(state): axum::extract::State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let decoded = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("zstd") => zstd::stream::decode_all(&body[..]),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .map(|_| out)
        }
        _ => Ok(body.to_vec()),
    };
    let data = match decoded {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    let n = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let fresh = match state.keys.lock() {
        Ok(mut k) => k.insert(key),
        Err(_) => true,
    };
    if fresh {
        state.events.fetch_add(n, Ordering::Relaxed);
    }
    (
        StatusCode::OK,
        format!("{{\"accepted\":{n},\"duplicate\":{}}}", !fresh),
    )
}

/// Starts the receiver on a runtime thread; returns its address and counters.
fn start_receiver() -> BenchResult<(SocketAddr, Arc<Receiver>)> {
    let state = Arc::new(Receiver::default());
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding the receiver: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("receiver socket: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("receiver socket: {e}"))?;
    let app = axum::Router::new()
        .route("/api/v1/ingest", axum::routing::post(ingest))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(state.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("receiver runtime: {e}"))?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        eprintln!("receiver stopped: {e}");
                    }
                }
                Err(e) => eprintln!("receiver socket: {e}"),
            }
        });
    });
    Ok((addr, state))
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> BenchResult<()> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn run_agent(
    args: &Args,
    config: Option<&Path>,
    name: &'static str,
    payload: &[u8],
    timeout: Duration,
) -> BenchResult<Outcome> {
    let bin = match &args.agent_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("finding this binary: {e}"))?
            .with_file_name("spoor-agent"),
    };
    let (recv_addr, receiver) = start_receiver()?;
    let dir = tempfile_dir("spoor-bench-agent")?;
    let tcp_port = free_port()?;
    let admin_port = free_port()?;
    let log = std::fs::File::create(dir.join("agent.log"))
        .map_err(|e| format!("creating the agent log: {e}"))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--collector", &format!("http://{recv_addr}")])
        .args(["--listen", &format!("tcp:127.0.0.1:{tcp_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .env("SPOOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    wait_until("the agent's TCP input", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", tcp_port)).is_ok()
    })?;
    eprintln!(
        "agent pid {pid} ({}), data dir {}",
        bin.display(),
        dir.display()
    );
    let payload = Arc::new(payload.to_vec());
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let sender = send_in_background(
        SocketAddr::from(([127, 0, 0, 1], tcp_port)),
        payload.clone(),
        sent.clone(),
    );
    let (elapsed, peak, cpu) = watch_progress(
        name,
        pid,
        &mut child.0,
        start,
        args.events,
        payload.len() as u64,
        &sent,
        &receiver.events,
        timeout,
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        format!("{e}\nagent log:\n{log}")
    })?;
    sender
        .join()
        .map_err(|_| "the sender panicked".to_string())??;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        name,
        events: args.events,
        bytes: payload.len() as u64,
        elapsed,
        peak_rss_kib: peak,
        cpu,
    })
}

fn tempfile_dir(prefix: &str) -> BenchResult<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A TCP sink counting the newline-terminated lines it receives.
fn start_sink(stop: Arc<AtomicBool>) -> BenchResult<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding sink: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("sink socket: {e}"))?
        .port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, conn);
                loop {
                    let buf = match r.fill_buf() {
                        Ok([]) | Err(_) => return,
                        Ok(b) => b,
                    };
                    let n = buf.iter().filter(|&&b| b == b'\n').count() as u64;
                    let len = buf.len();
                    c.fetch_add(n, Ordering::Relaxed);
                    r.consume(len);
                }
            });
        }
    });
    Ok((port, count))
}

fn run_syslog_ng(
    script: &Path,
    payload: &[u8],
    events: u64,
    timeout: Duration,
) -> BenchResult<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let (sink_port, delivered) = start_sink(stop.clone())?;
    let in_port = free_port()?;
    let dir = tempfile_dir("spoor-bench-syslog-ng")?;
    let log = std::fs::File::create(dir.join("syslog-ng.log"))
        .map_err(|e| format!("creating the syslog-ng log: {e}"))?;
    let child = Command::new(script)
        .arg(in_port.to_string())
        .arg(sink_port.to_string())
        .arg(dir.join("buf"))
        .arg("yes")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", script.display()))?;
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    wait_until("syslog-ng's TCP source", Duration::from_secs(120), || {
        TcpStream::connect(("127.0.0.1", in_port)).is_ok()
    })
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("syslog-ng.log")).unwrap_or_default();
        format!("{e}\nsyslog-ng log:\n{log}")
    })?;
    // The probe connection above counts as a (empty) connection; nothing was sent on it.
    eprintln!("syslog-ng pid {pid}, buffer dir {}", dir.display());
    let payload = Arc::new(payload.to_vec());
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let sender = send_in_background(
        SocketAddr::from(([127, 0, 0, 1], in_port)),
        payload.clone(),
        sent.clone(),
    );
    let (elapsed, peak, cpu) = watch_progress(
        "syslog-ng",
        pid,
        &mut child.0,
        start,
        events,
        payload.len() as u64,
        &sent,
        &delivered,
        timeout,
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("syslog-ng.log")).unwrap_or_default();
        format!("{e}\nsyslog-ng log:\n{log}")
    })?;
    sender
        .join()
        .map_err(|_| "the sender panicked".to_string())??;
    stop.store(true, Ordering::Relaxed);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        name: "syslog-ng",
        events,
        bytes: payload.len() as u64,
        elapsed,
        peak_rss_kib: peak,
        cpu,
    })
}
