//! `spoor run`: logging for tasks written in any language. Runs a program and turns each
//! line it prints into an event with the task keys, sent through the same [`Transport`]
//! as the layer (agent socket, else spill file).
//!
//! - A stdout line is `level=info`, a stderr line `level=warn`, unless the line is logfmt
//!   with a known `level` of its own (then that level, and its own `ts` when it has one).
//!   Every line gets `stream=stdout|stderr`; logfmt lines keep their fields. Lines longer
//!   than 64 KiB are cut and flagged `truncated=true`, as the agent would.
//! - `task`, `task_id` (a new one when not given), `attempt`, `depth`, `version`, `host`,
//!   `instance` come from the options and [`Config`]; `pid` is the program's.
//! - The program gets `SPOOR_TASK`, `SPOOR_TASK_ID`, `SPOOR_ATTEMPT` and `SPOOR_DEPTH`, so
//!   if it links the SDK its own lines carry the same keys.
//! - After the program ends, one more event: `exit_code` or `signal` (`signal_name`),
//!   `duration_ms` and `lines`; `level=info` on success, `level=error` otherwise.
//! - [`RunOutcome::exit_code`] is the program's own status (`128 + N` for signal N, as
//!   shells report it), for `spoor run` to exit with.
//!
//! Known limit: `spoor run` does not forward signals to the program; a Ctrl-C reaches
//! both through the terminal's process group.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::Config;
use crate::event::{Event, Level, keys};
use crate::logfmt::{ReadOptions, read_line};
use crate::transport::{FlushReport, Transport, TransportError};

/// What to run and how to label its lines.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `task`.
    pub task: String,
    /// `task_id`; a new one ([`crate::task::new_task_id`]) when `None`.
    pub task_id: Option<String>,
    /// `attempt`, 1 for the first try.
    pub attempt: u32,
    /// `depth`.
    pub depth: u32,
    /// The program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Also copy the program's stdout and stderr to ours.
    pub passthrough: bool,
    /// Transport and identity settings (agent, spill directory, version, host, instance).
    pub config: Config,
}

/// How the program ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The status to exit with: the program's exit code, or `128 + N` for signal N.
    pub exit_code: u8,
    /// The program's exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// How long it ran.
    pub duration: Duration,
    /// The run's `task_id`.
    pub task_id: String,
    /// Lines read from its stdout and stderr.
    pub lines: u64,
    /// What the transport did with them.
    pub report: FlushReport,
}

/// Why the program could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The program could not be started (not found, not executable).
    #[error("starting {program:?}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for the program failed.
    #[error("waiting for {program:?}")]
    Wait {
        /// The program.
        program: OsString,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl RunError {
    /// The exit status shells use for this: 127 when the program was not found, 126 when
    /// it could not be executed, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            RunError::Spawn { .. } => 126,
            _ => 2,
        }
    }
}

/// The keys every line of the run carries.
struct RunKeys {
    fixed: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn default_level(self) -> Level {
        match self {
            Stream::Stdout => Level::Info,
            Stream::Stderr => Level::Warn,
        }
    }
}

/// Runs the program to its end; see the module docs.
pub fn run_command(options: RunOptions) -> Result<RunOutcome, RunError> {
    let transport = Arc::new(Transport::start(&options.config)?);
    let task_id = options
        .task_id
        .clone()
        .unwrap_or_else(crate::task::new_task_id);
    let mut keys = RunKeys {
        fixed: vec![
            (keys::TASK, options.task.clone()),
            (keys::TASK_ID, task_id.clone()),
            (keys::ATTEMPT, options.attempt.to_string()),
            (keys::DEPTH, options.depth.to_string()),
            (keys::HOST, options.config.host.clone()),
        ],
    };
    if let Some(v) = &options.config.version {
        keys.fixed.push((keys::VERSION, v.clone()));
    }
    if let Some(i) = &options.config.instance {
        keys.fixed.push((keys::INSTANCE, i.clone()));
    }
    let started = Instant::now();
    let spawned = Command::new(&options.program)
        .args(&options.args)
        .env("SPOOR_TASK", &options.task)
        .env("SPOOR_TASK_ID", &task_id)
        .env("SPOOR_ATTEMPT", options.attempt.to_string())
        .env("SPOOR_DEPTH", options.depth.to_string())
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            let mut event = base_event(&keys, Level::Error, "command could not start", None);
            event.push("command", options.program.to_string_lossy());
            event.push("error", source.to_string());
            transport.send(event.to_line());
            transport.shutdown(options.config.flush_timeout);
            return Err(RunError::Spawn {
                program: options.program,
                source,
            });
        }
    };
    let pid = child.id().to_string();
    keys.fixed.push((keys::PID, pid));
    let keys = Arc::new(keys);
    let lines = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let streams: [(Option<Box<dyn Read + Send>>, Stream); 2] = [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            Stream::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            Stream::Stderr,
        ),
    ];
    for (pipe, stream) in streams {
        let Some(pipe) = pipe else { continue };
        let (transport, keys, lines) = (
            Arc::clone(&transport),
            Arc::clone(&keys),
            Arc::clone(&lines),
        );
        let passthrough = options.passthrough;
        readers.push(std::thread::spawn(move || {
            forward_lines(pipe, stream, passthrough, &keys, &transport, &lines);
        }));
    }
    let status = child.wait();
    for reader in readers {
        let _ = reader.join();
    }
    let duration = started.elapsed();
    let status = match status {
        Ok(status) => status,
        Err(source) => {
            transport.shutdown(options.config.flush_timeout);
            return Err(RunError::Wait {
                program: options.program,
                source,
            });
        }
    };
    let lines = lines.load(Ordering::SeqCst);
    let (code, signal) = decode_status(status);
    let exit_code = match (code, signal) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (None, None) => 1,
    };
    let (level, msg) = match (code, signal) {
        (Some(0), _) => (Level::Info, "command exited"),
        (Some(_), _) => (Level::Error, "command failed"),
        _ => (Level::Error, "command killed by signal"),
    };
    let mut event = base_event(&keys, level, msg, None);
    event.push("command", options.program.to_string_lossy());
    if let Some(c) = code {
        event.push("exit_code", c.to_string());
    }
    if let Some(s) = signal {
        event.push("signal", s.to_string());
        if let Some(name) = signal_name(s) {
            event.push("signal_name", name);
        }
    }
    event.push("duration_ms", duration.as_millis().to_string());
    event.push("lines", lines.to_string());
    transport.send(event.to_line());
    let report = transport.shutdown(options.config.flush_timeout);
    Ok(RunOutcome {
        exit_code,
        code,
        signal,
        duration,
        task_id,
        lines,
        report,
    })
}

fn decode_status(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        (status.code(), status.signal())
    }
    #[cfg(not(unix))]
    {
        (status.code(), None)
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

fn base_event(keys: &RunKeys, level: Level, msg: &str, ts: Option<String>) -> Event {
    let mut e = Event::new();
    match ts {
        Some(ts) => e.push(keys::TS, ts),
        None => e.set_timestamp(OffsetDateTime::now_utc()),
    }
    e.push(keys::LEVEL, level.as_str());
    e.push(keys::MSG, msg);
    for (k, v) in &keys.fixed {
        e.push(*k, v.clone());
    }
    e
}

/// Turns one line of the program's output into the line to send.
fn line_event(bytes: &[u8], stream: Stream, keys: &RunKeys, options: &ReadOptions) -> String {
    let (parsed, flags) = read_line(bytes, options);
    let own_level = if flags.logfmt { parsed.level() } else { None };
    let own_ts = flags
        .logfmt
        .then(|| {
            parsed
                .get(keys::TS)
                .filter(|_| parsed.timestamp().is_some_and(|t| t.is_ok()))
        })
        .flatten()
        .map(str::to_string);
    let level = own_level.unwrap_or(stream.default_level());
    let msg = parsed.get(keys::MSG).unwrap_or("");
    let mut event = base_event(keys, level, msg, own_ts.clone());
    for (k, v) in parsed.pairs() {
        let ours = keys.fixed.iter().any(|(f, _)| *f == k);
        let skip = ours
            || k == keys::MSG
            || (k == keys::TS && own_ts.is_some())
            || (k == keys::LEVEL && own_level.is_some());
        if skip {
            continue;
        }
        // A `ts` or `level` we could not use stays, renamed, rather than being lost.
        let key = match k {
            keys::TS => "_ts",
            keys::LEVEL => "_level",
            other => other,
        };
        event.push(key, v);
    }
    event.push("stream", stream.name());
    event.to_line()
}

fn forward_lines(
    pipe: Box<dyn Read + Send>,
    stream: Stream,
    passthrough: bool,
    keys: &RunKeys,
    transport: &Transport,
    lines: &AtomicU64,
) {
    let options = ReadOptions::default();
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::new();
    let mut echo: Box<dyn Write> = match stream {
        Stream::Stdout => Box::new(io::stdout()),
        Stream::Stderr => Box::new(io::stderr()),
    };
    loop {
        match read_bounded_line(&mut reader, &mut line, options.max_line_bytes, |chunk| {
            if passthrough {
                // The terminal going away must not stop the logging.
                let _ = echo.write_all(chunk);
            }
        }) {
            Ok(true) => {
                if passthrough {
                    let _ = echo.flush();
                }
                transport.send(line_event(&line, stream, keys, &options));
                lines.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads one line into `buf`, keeping at most `max + 1` bytes of it (enough for the reader
/// to see that it is too long) and discarding the rest up to its newline. Every chunk read
/// is also given to `tee`. `Ok(false)` at end of stream with nothing read.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    mut tee: impl FnMut(&[u8]),
) -> io::Result<bool> {
    buf.clear();
    let mut got_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(got_any);
        }
        got_any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        tee(chunk);
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> RunKeys {
        RunKeys {
            fixed: vec![
                (keys::TASK, "t".into()),
                (keys::TASK_ID, "id".into()),
                (keys::ATTEMPT, "1".into()),
                (keys::DEPTH, "0".into()),
                (keys::HOST, "h".into()),
                (keys::PID, "7".into()),
            ],
        }
    }

    fn event(line: &str, stream: Stream) -> Event {
        let out = line_event(line.as_bytes(), stream, &keys(), &ReadOptions::default());
        Event::from_line(out.as_bytes()).0
    }

    #[test]
    fn plain_lines_take_the_stream_level() {
        let e = event("hello world\n", Stream::Stdout);
        assert_eq!(
            (e.get("level"), e.get("msg")),
            (Some("info"), Some("hello world"))
        );
        assert_eq!(
            (e.get("task"), e.get("task_id"), e.get("pid")),
            (Some("t"), Some("id"), Some("7"))
        );
        assert_eq!(e.get("stream"), Some("stdout"));
        let e = event("oops", Stream::Stderr);
        assert_eq!(
            (e.get("level"), e.get("stream")),
            (Some("warn"), Some("stderr"))
        );
    }

    #[test]
    fn logfmt_lines_keep_their_level_ts_and_fields() {
        let e = event(
            "ts=2026-11-30T03:21:03.5Z level=error msg=\"charge failed\" amount=12 task=other",
            Stream::Stderr,
        );
        assert_eq!(e.get("level"), Some("error"));
        assert_eq!(e.get("ts"), Some("2026-11-30T03:21:03.5Z"));
        assert_eq!(e.get("msg"), Some("charge failed"));
        assert_eq!(e.get("amount"), Some("12"));
        assert_eq!(e.get("task"), Some("t"), "the run's keys win");
        let e = event("level=loud ts=later msg=x", Stream::Stdout);
        assert_eq!(e.get("level"), Some("info"));
        assert_eq!(
            (e.get("_level"), e.get("_ts")),
            (Some("loud"), Some("later"))
        );
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let text = format!("{}\nnext\n", "x".repeat(100));
        let mut reader = BufReader::with_capacity(8, text.as_bytes());
        let mut buf = Vec::new();
        let mut teed = Vec::new();
        assert!(
            read_bounded_line(&mut reader, &mut buf, 10, |c| teed.extend_from_slice(c))
                .expect("read")
        );
        assert_eq!(buf.len(), 11);
        let (e, flags) = read_line(&buf, &ReadOptions { max_line_bytes: 10 });
        assert!(flags.truncated);
        assert_eq!(e.get("msg").map(str::len), Some(10));
        assert!(
            read_bounded_line(&mut reader, &mut buf, 10, |c| teed.extend_from_slice(c))
                .expect("read")
        );
        assert_eq!(buf, b"next\n");
        assert!(!read_bounded_line(&mut reader, &mut buf, 10, |_| {}).expect("eof"));
        assert_eq!(teed, text.as_bytes(), "passthrough sees every byte");
    }
}
