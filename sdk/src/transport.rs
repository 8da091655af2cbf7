//! The transport: hands finished lines to the agent without ever making the caller wait
//! on the network.
//!
//! - **Callers** only copy a line into a bounded in-memory queue (a mutex-guarded byte
//!   buffer of whole lines; the worker is woken only when it sleeps). The worker swaps the
//!   buffer for an empty one it kept from last time, so in a steady state nothing is
//!   allocated per line and nothing allocated on one thread is freed on another (glibc's
//!   malloc locks the owning arena for that, which measured as the largest single cost of
//!   an event). When the queue holds [`Config::queue_capacity`] lines, the caller appends
//!   the line to the spill file itself (a write to the page cache, never the network).
//! - **One background thread** (a plain `std` thread, no async runtime) takes everything
//!   queued, writes it to the agent's socket (Unix or TCP), reconnects with exponential
//!   backoff (50 ms doubling to 2 s), and spills what it cannot send. Before each write it
//!   checks whether the agent closed the connection, so lines are not written into a dead
//!   socket. Once the kernel accepted a line, the agent is responsible for it: there are no
//!   acknowledgements on this hop. A line cut by a failed write reaches the agent as an
//!   unterminated fragment and is spilled whole, so a reader should discard an unterminated
//!   last line at end of stream.
//! - **Nothing is dropped silently.** A line that cannot be spilled either (spill directory
//!   full or unwritable) is counted; the next line that gets through, to the socket or a
//!   spill file, is preceded by `level=warn msg="spoor dropped events" dropped=N`.
//! - **Flush and shutdown.** [`Transport::flush`] waits, up to a timeout, until every line
//!   handed in before it was sent or spilled; on timeout it spills what is still queued
//!   from the calling thread, so a process that exits right after loses only what the
//!   worker holds in its hands. [`Transport::shutdown`] flushes, then stops the worker;
//!   lines sent after it go straight to the spill file.
//! - **No recursion.** The worker emits no `tracing` events; the SDK's own diagnostics go
//!   to stderr, once per kind of trouble.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::{AgentAddr, Config};
use crate::event::{Event, keys};
use crate::spill::{SpillError, SpillWriter};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

thread_local! {
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is a transport worker (whose events must not be logged).
pub(crate) fn on_worker_thread() -> bool {
    ON_WORKER.with(|w| w.get())
}

/// What happened to the lines handed to a [`Transport`], as of a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Every line handed in before the flush was sent or spilled in time.
    pub complete: bool,
    /// Lines the worker held at the deadline (sent or spilled later, or lost if the
    /// process exits now).
    pub in_flight: u64,
    /// Lines written to the agent's socket since the start.
    pub sent: u64,
    /// Lines written to spill files since the start (the agent picks them up).
    pub spilled: u64,
    /// Lines lost since the start (spill directory full or unwritable).
    pub dropped: u64,
    /// The spill directory.
    pub spill_dir: PathBuf,
}

impl FlushReport {
    /// Whether every line reached the agent's socket.
    pub fn all_sent(&self) -> bool {
        self.complete && self.spilled == 0 && self.dropped == 0
    }
}

impl std::fmt::Display for FlushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent to the agent, {} spilled to {} (the agent picks them up), {} dropped",
            self.sent,
            self.spilled,
            self.spill_dir.display(),
            self.dropped
        )?;
        if !self.complete {
            write!(f, ", {} still in flight at the deadline", self.in_flight)?;
        }
        Ok(())
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The worker thread could not be spawned.
    #[error("starting the spoor transport thread")]
    Spawn(#[source] io::Error),
}

/// A bounded queue of lines and the thread that delivers them. See the module docs.
#[derive(Debug)]
pub struct Transport {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Queue {
    /// Whole lines, each ending in `\n`.
    bytes: Vec<u8>,
    /// How many lines `bytes` holds.
    lines: usize,
    worker_sleeping: bool,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    /// Lines accepted into the queue, and lines taken out of it and dealt with.
    enqueued: AtomicU64,
    handled: AtomicU64,
    progress: Mutex<()>,
    progress_cv: Condvar,
    flush_waiters: AtomicUsize,
    spill: Mutex<SpillWriter>,
    spill_dir: PathBuf,
    /// Dropped lines not yet reported by a `spoor dropped events` line.
    unreported_drops: AtomicU64,
    sent: AtomicU64,
    spilled: AtomicU64,
    dropped: AtomicU64,
    spill_trouble_reported: AtomicBool,
    identity: Vec<(&'static str, String)>,
    agent: AgentAddr,
    write_timeout: Duration,
    shutdown_done: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every critical
    // section is a push, a swap or a whole write), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport {
    /// Starts the worker thread. Nothing is connected or created on disk until the first
    /// line arrives.
    pub fn start(config: &Config) -> Result<Transport, TransportError> {
        let mut identity = Vec::new();
        if let Some(v) = &config.version {
            identity.push((keys::VERSION, v.clone()));
        }
        identity.push((keys::HOST, config.host.clone()));
        identity.push((keys::PID, std::process::id().to_string()));
        if let Some(i) = &config.instance {
            identity.push((keys::INSTANCE, i.clone()));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                bytes: Vec::with_capacity(QUEUE_START_BYTES),
                lines: 0,
                worker_sleeping: false,
                closed: false,
            }),
            wake: Condvar::new(),
            capacity: config.queue_capacity.max(1),
            enqueued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            progress: Mutex::new(()),
            progress_cv: Condvar::new(),
            flush_waiters: AtomicUsize::new(0),
            spill: Mutex::new(SpillWriter::new(config.spill.clone())),
            spill_dir: config.spill.dir.clone(),
            unreported_drops: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            spill_trouble_reported: AtomicBool::new(false),
            identity,
            agent: config.agent.clone(),
            write_timeout: config.write_timeout,
            shutdown_done: AtomicBool::new(false),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("spoor-transport".into())
            .spawn(move || Worker::new(worker_shared).run())
            .map_err(TransportError::Spawn)?;
        Ok(Transport {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Hands one logfmt line to the agent (a trailing `\n` is added when missing). Never
    /// blocks on the network: when the queue is full the line goes to the spill file.
    pub fn send(&self, line: String) {
        self.send_str(&line);
    }

    /// [`Transport::send`] without giving up a `String`: the line is copied into the
    /// queue, so the caller can reuse its buffer.
    pub fn send_str(&self, line: &str) {
        let bytes = line.as_bytes();
        let terminated = bytes.last() == Some(&b'\n');
        // A logfmt line has no raw newline inside; should one slip in, it is counted as
        // the line break it will be everywhere downstream, so the counts stay true.
        let count = memchr::memchr_iter(b'\n', bytes).count() + usize::from(!terminated);
        let shared = &*self.shared;
        let mut q = lock(&shared.queue);
        if !q.closed && q.lines < shared.capacity {
            q.bytes.extend_from_slice(bytes);
            if !terminated {
                q.bytes.push(b'\n');
            }
            q.lines += count;
            shared.enqueued.fetch_add(count as u64, Ordering::SeqCst);
            if q.worker_sleeping {
                q.worker_sleeping = false;
                shared.wake.notify_one();
            }
            return;
        }
        drop(q);
        if terminated {
            shared.spill_bytes(bytes);
        } else {
            let mut owned = Vec::with_capacity(bytes.len() + 1);
            owned.extend_from_slice(bytes);
            owned.push(b'\n');
            shared.spill_bytes(&owned);
        }
    }

    /// Waits up to `timeout` until every line handed in so far was sent or spilled; on
    /// timeout spills what is still queued. See the module docs.
    pub fn flush(&self, timeout: Duration) -> FlushReport {
        let shared = &*self.shared;
        let target = shared.enqueued.load(Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        {
            let mut q = lock(&shared.queue);
            if q.worker_sleeping && q.lines > 0 {
                q.worker_sleeping = false;
                shared.wake.notify_one();
            }
        }
        shared.flush_waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&shared.progress);
        while shared.handled.load(Ordering::SeqCst) < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Bounded waits: a missed wake-up costs at most 50 ms, never a hang.
            guard = match shared
                .progress_cv
                .wait_timeout(guard, left.min(Duration::from_millis(50)))
            {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        drop(guard);
        shared.flush_waiters.fetch_sub(1, Ordering::SeqCst);
        let mut complete = shared.handled.load(Ordering::SeqCst) >= target;
        if !complete {
            // The worker is stuck (a slow agent); keep the queued lines safe on disk. The
            // count can then run ahead of the order lines were queued in, so after such a
            // steal `complete` means "nothing is queued any more" (see `in_flight`).
            let (stolen, n) = {
                let mut q = lock(&shared.queue);
                let n = std::mem::take(&mut q.lines) as u64;
                (std::mem::take(&mut q.bytes), n)
            };
            shared.spill_bytes(&stolen);
            shared.handled.fetch_add(n, Ordering::SeqCst);
            complete = shared.handled.load(Ordering::SeqCst) >= target;
        }
        self.report(complete)
    }

    /// Flushes (see [`Transport::flush`]) and stops the worker. Lines sent afterwards go
    /// straight to the spill file. Calling it again only reports.
    pub fn shutdown(&self, timeout: Duration) -> FlushReport {
        if self.shared.shutdown_done.swap(true, Ordering::SeqCst) {
            return self.report(true);
        }
        let report = self.flush(timeout);
        {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            q.worker_sleeping = false;
            self.shared.wake.notify_one();
        }
        // Join only a worker with nothing in its hands; a stuck one is left to finish.
        if report.in_flight == 0
            && let Some(handle) = lock(&self.worker).take()
        {
            let _ = handle.join();
        }
        report
    }

    /// The counts so far, without waiting.
    pub fn stats(&self) -> FlushReport {
        self.report(
            self.shared.handled.load(Ordering::SeqCst)
                >= self.shared.enqueued.load(Ordering::SeqCst),
        )
    }

    fn report(&self, complete: bool) -> FlushReport {
        let s = &*self.shared;
        FlushReport {
            complete,
            in_flight: s
                .enqueued
                .load(Ordering::SeqCst)
                .saturating_sub(s.handled.load(Ordering::SeqCst)),
            sent: s.sent.load(Ordering::SeqCst),
            spilled: s.spilled.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            spill_dir: s.spill_dir.clone(),
        }
    }

    /// An event with `ts`, `level`, `msg` and this process's `version`, `host`, `pid` and
    /// `instance`, for the SDK's own reports.
    pub(crate) fn notice(&self, level: crate::Level, msg: &str) -> Event {
        self.shared.notice(level, msg)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

impl Shared {
    fn notice(&self, level: crate::Level, msg: &str) -> Event {
        let mut e = Event::new();
        e.set_timestamp(OffsetDateTime::now_utc());
        e.push(keys::LEVEL, level.as_str());
        e.push(keys::MSG, msg);
        for (k, v) in &self.identity {
            e.push(*k, v.clone());
        }
        e
    }

    /// A `spoor dropped events` line when drops are waiting to be reported.
    fn take_drop_notice(&self) -> Option<(u64, String)> {
        let n = self.unreported_drops.swap(0, Ordering::SeqCst);
        if n == 0 {
            return None;
        }
        let mut e = self.notice(crate::Level::Warn, "spoor dropped events");
        e.push("dropped", n.to_string());
        let mut line = e.to_line();
        line.push('\n');
        Some((n, line))
    }

    fn count_drops(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::SeqCst);
            self.unreported_drops.fetch_add(n, Ordering::SeqCst);
        }
    }

    /// Appends whole `\n`-terminated lines to the spill file, preceded by a drop notice
    /// when one is due; what cannot be written is counted as dropped.
    fn spill_bytes(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        let mut spill = lock(&self.spill);
        let notice = self.take_drop_notice();
        let with_notice = notice.iter().map(|(_, l)| l.as_bytes());
        let all = with_notice.chain(lines.iter().copied());
        let total = lines.len() as u64 + u64::from(notice.is_some());
        let written = match spill.write_lines(all) {
            Ok(()) => total,
            Err((written, err)) => {
                self.report_spill_trouble(&err);
                written as u64
            }
        };
        drop(spill);
        let notice_written = notice.is_some() && written > 0;
        let lines_written = written - u64::from(notice_written);
        self.spilled.fetch_add(lines_written, Ordering::SeqCst);
        if let Some((n, _)) = notice.filter(|_| !notice_written) {
            self.unreported_drops.fetch_add(n, Ordering::SeqCst);
        }
        self.count_drops(lines.len() as u64 - lines_written);
    }

    fn report_spill_trouble(&self, err: &SpillError) {
        if !self.spill_trouble_reported.swap(true, Ordering::SeqCst) {
            let mut msg = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("spoor-sdk: {msg}; lines that cannot be spilled are dropped and counted");
        }
    }

    fn mark_handled(&self, n: u64) {
        self.handled.fetch_add(n, Ordering::SeqCst);
        if self.flush_waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.progress);
            self.progress_cv.notify_all();
        }
    }
}

/// A connection to the agent, non-blocking so that a stuck agent costs a bounded wait.
enum Conn {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn connect(addr: &AgentAddr) -> io::Result<Conn> {
        let conn = match addr {
            #[cfg(unix)]
            AgentAddr::Unix(path) => Conn::Unix(std::os::unix::net::UnixStream::connect(path)?),
            #[cfg(not(unix))]
            AgentAddr::Unix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no Unix sockets here",
                ));
            }
            AgentAddr::Tcp(addr) => {
                let mut last =
                    io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
                let mut stream = None;
                for a in addr.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let stream = stream.ok_or(last)?;
                stream.set_nodelay(true)?;
                Conn::Tcp(stream)
            }
        };
        match &conn {
            #[cfg(unix)]
            Conn::Unix(s) => s.set_nonblocking(true)?,
            Conn::Tcp(s) => s.set_nonblocking(true)?,
        }
        Ok(conn)
    }

    /// Whether the agent closed its end (it never sends us anything, so readable means
    /// end of stream or an error).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let r = match self {
            #[cfg(unix)]
            Conn::Unix(s) => s.read(&mut byte),
            Conn::Tcp(s) => s.read(&mut byte),
        };
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    /// Writes all of `buf`, waiting while the socket is full but giving up after `stall`
    /// without progress. On error, says how many bytes went out.
    fn write_all(&mut self, buf: &[u8], stall: Duration) -> Result<(), (usize, io::Error)> {
        let mut off = 0;
        let mut last_progress = Instant::now();
        while off < buf.len() {
            match self.write(&buf[off..]) {
                Ok(0) => return Err((off, io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    off += n;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if last_progress.elapsed() >= stall {
                        return Err((off, io::ErrorKind::TimedOut.into()));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err((off, e)),
            }
        }
        Ok(())
    }
}

struct Worker {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    next_attempt: Instant,
    backoff: Duration,
    connect_trouble_reported: bool,
}

/// The queue's buffer starts this big, and the worker's is cut back to it after a burst
/// made it grow past [`QUEUE_KEEP_BYTES`].
const QUEUE_START_BYTES: usize = 64 * 1024;
const QUEUE_KEEP_BYTES: usize = 4 * 1024 * 1024;
/// A batch smaller than this makes the worker pause briefly so more lines gather.
const GATHER_BELOW: usize = 64;
/// How long that pause is: far below anything a person or the agent would notice.
const GATHER_PAUSE: Duration = Duration::from_micros(200);

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            conn: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            connect_trouble_reported: false,
        }
    }

    fn run(mut self) {
        ON_WORKER.with(|w| w.set(true));
        let mut batch: Vec<u8> = Vec::with_capacity(QUEUE_START_BYTES);
        loop {
            let n;
            {
                let mut q = lock(&self.shared.queue);
                while q.lines == 0 && !q.closed {
                    q.worker_sleeping = true;
                    q = match self.shared.wake.wait_timeout(q, Duration::from_secs(1)) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
                q.worker_sleeping = false;
                if q.lines == 0 {
                    return; // closed and drained
                }
                if q.lines < GATHER_BELOW && !q.closed {
                    // Woken for a few lines: let more gather before taking them. While the
                    // worker is awake the emitting threads skip the wake-up (a futex call),
                    // which is most of their cost when lines come one at a time.
                    drop(q);
                    std::thread::sleep(GATHER_PAUSE);
                    q = lock(&self.shared.queue);
                }
                std::mem::swap(&mut q.bytes, &mut batch);
                n = std::mem::take(&mut q.lines) as u64;
            }
            self.deliver(&batch);
            batch.clear();
            if batch.capacity() > QUEUE_KEEP_BYTES {
                // A burst of huge lines: give the memory back rather than keep it forever.
                batch.shrink_to(QUEUE_START_BYTES);
            }
            self.shared.mark_handled(n);
        }
    }

    /// Writes a batch of whole lines to the agent, spilling whatever did not go out.
    fn deliver(&mut self, batch: &[u8]) {
        if let Some((n, notice)) = self.shared.take_drop_notice()
            && !self.write_to_agent(notice.as_bytes()).is_empty()
        {
            // Not sent: it goes back to the count, and the spill below reports it.
            self.shared.unreported_drops.fetch_add(n, Ordering::SeqCst);
        }
        let rest = self.write_to_agent(batch);
        let sent_bytes = &batch[..batch.len() - rest.len()];
        let sent = memchr::memchr_iter(b'\n', sent_bytes).count();
        self.shared.sent.fetch_add(sent as u64, Ordering::SeqCst);
        self.shared.spill_bytes(rest);
    }

    /// Writes whole lines to the agent's socket, connecting first if it is time to; returns
    /// the lines that did not go out whole (all of them when there is no connection). A
    /// line cut by a failed write is returned whole.
    fn write_to_agent<'b>(&mut self, lines: &'b [u8]) -> &'b [u8] {
        if lines.is_empty() {
            return lines;
        }
        if self.conn.as_mut().is_some_and(Conn::is_closed) {
            self.conn = None;
            self.next_attempt = Instant::now();
        }
        if self.conn.is_none() && Instant::now() >= self.next_attempt {
            self.connect();
        }
        let Some(conn) = self.conn.as_mut() else {
            return lines;
        };
        match conn.write_all(lines, self.shared.write_timeout) {
            Ok(()) => &lines[lines.len()..],
            Err((written, _)) => {
                self.conn = None;
                self.next_attempt = Instant::now() + self.backoff;
                let whole = memchr::memrchr(b'\n', &lines[..written]).map_or(0, |i| i + 1);
                &lines[whole..]
            }
        }
    }

    fn connect(&mut self) {
        match Conn::connect(&self.shared.agent) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.backoff = BACKOFF_MIN;
                self.connect_trouble_reported = false;
            }
            Err(e) => {
                if !self.connect_trouble_reported {
                    self.connect_trouble_reported = true;
                    eprintln!(
                        "spoor-sdk: cannot reach the agent at {}: {e}; spilling to {} and retrying",
                        self.shared.agent,
                        self.shared.spill_dir.display()
                    );
                }
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
