//! [`Config`]: everything the tracing layer and the transport need, with the defaults of
//! DESIGN.md, read once from the environment by [`Config::from_env`] and checked there.
//!
//! | variable | field | default |
//! |---|---|---|
//! | `SPOOR_AGENT` (`unix:PATH` or `tcp:HOST:PORT`) | [`Config::agent`] | `unix:/var/lib/spoor-agent/agent.sock` |
//! | `SPOOR_SPILL_DIR` | [`SpillConfig::dir`] | `$TMPDIR/spoor-spill` |
//! | `SPOOR_TASK`, `SPOOR_TASK_ID`, `SPOOR_ATTEMPT`, `SPOOR_DEPTH` | [`Config::task`] | none |
//! | `SPOOR_VERSION` | [`Config::version`] | the calling crate's (see [`crate::init!`]) |
//! | `SPOOR_INSTANCE`, else `AWS_LAMBDA_LOG_STREAM_NAME`, else `HOSTNAME` | [`Config::instance`] | none |
//! | `SPOOR_LEVEL` (a `tracing` target filter, `info,my_crate=debug`) | [`Config::filter`] | `info` |
//! | `SPOOR_LOCAL_TIME` (`true`/`false`) | [`Config::local_time`] | `false` (UTC) |
//! | `SPOOR_FLUSH_TIMEOUT` (`2s`, `500ms`) | [`Config::flush_timeout`] | 2 s |
//! | `SPOOR_QUEUE_CAPACITY` (lines) | [`Config::queue_capacity`] | 8192 |
//! | `SPOOR_DEBUG_BUFFER` (bytes per task run, 0 = off) | [`Config::debug_buffer_bytes`] | off |
//!
//! `spoor run` sets `SPOOR_TASK`, `SPOOR_TASK_ID`, `SPOOR_ATTEMPT` and `SPOOR_DEPTH` for the
//! program it runs, so a program that links the SDK logs with the same task keys.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tracing_subscriber::filter::Targets;

use crate::spill::SpillConfig;

/// Where the agent listens for newline-delimited lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    /// A Unix stream socket (`unix:/path/to/agent.sock`).
    Unix(PathBuf),
    /// A TCP address (`tcp:127.0.0.1:8741`); host names are resolved at each connect.
    Tcp(String),
}

impl Default for AgentAddr {
    /// The socket the agent opens in its default data directory.
    fn default() -> Self {
        AgentAddr::Unix(PathBuf::from("/var/lib/spoor-agent/agent.sock"))
    }
}

impl FromStr for AgentAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path".into());
            }
            return Ok(AgentAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err("`tcp:` needs HOST:PORT".into());
            }
            return Ok(AgentAddr::Tcp(addr.to_string()));
        }
        Err("expected `unix:PATH` or `tcp:HOST:PORT`".into())
    }
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            AgentAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// The task keys every line carries when no [`crate::task()`] scope says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskKeys {
    /// `task`: the task (function) name.
    pub task: Option<String>,
    /// `task_id`: one run of the task, stable across retries.
    pub task_id: Option<String>,
    /// `attempt`: 1 for the first try.
    pub attempt: Option<u32>,
    /// `depth`: how many tasks deep.
    pub depth: Option<u32>,
}

/// Settings of the SDK. Build it with [`Config::from_env`] (the usual way) or
/// [`Config::default`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to send lines.
    pub agent: AgentAddr,
    /// Where lines go when the agent is unreachable or the queue is full.
    pub spill: SpillConfig,
    /// Task keys for lines outside any task scope.
    pub task: TaskKeys,
    /// `version`: the task code's version (`1.4.2+a1b2c3d`); `None` leaves it out.
    pub version: Option<String>,
    /// `host`; defaults to the system's host name.
    pub host: String,
    /// `instance` (container, Lambda log stream, VM); `None` leaves it out.
    pub instance: Option<String>,
    /// Which events are written (`tracing` target filter syntax).
    pub filter: Targets,
    /// Write `ts` with the local UTC offset (taken once at start) instead of `Z`.
    pub local_time: bool,
    /// How long dropping the guard (or [`crate::flush`]) waits for the agent. Default 2 s.
    pub flush_timeout: Duration,
    /// Lines the in-memory queue holds before callers spill directly. Default 8192.
    pub queue_capacity: usize,
    /// When set, `debug` and `trace` events inside a task scope are held in a ring buffer
    /// of this many bytes per run and written only if the run logs an error.
    pub debug_buffer_bytes: Option<usize>,
    /// Install a panic hook that writes a `level=fatal` event and flushes. Default true.
    pub panic_hook: bool,
    /// A write to the agent that makes no progress for this long counts as a failure (the
    /// rest goes to the spill file and the connection is reopened). Default 1 s.
    pub write_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent: AgentAddr::default(),
            spill: SpillConfig::default(),
            task: TaskKeys::default(),
            version: None,
            host: hostname(),
            instance: None,
            filter: Targets::new().with_default(tracing::Level::INFO),
            local_time: false,
            flush_timeout: Duration::from_secs(2),
            queue_capacity: 8192,
            debug_buffer_bytes: None,
            panic_hook: true,
            write_timeout: Duration::from_secs(1),
        }
    }
}

/// An environment variable with a value the SDK cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub key: &'static str,
    /// What it held.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Config {
    /// The defaults, overridden by the `SPOOR_*` variables of the module table.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`Config::from_env`] with the variables looked up by `env` (for tests, and
    /// for `spoor run`, which passes its own).
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |key: &str| env(key).filter(|v| !v.is_empty());
        let mut c = Config::default();
        if let Some(v) = get("SPOOR_AGENT") {
            c.agent = parse("SPOOR_AGENT", &v)?;
        }
        if let Some(v) = get("SPOOR_SPILL_DIR") {
            c.spill.dir = PathBuf::from(v);
        }
        c.task.task = get("SPOOR_TASK");
        c.task.task_id = get("SPOOR_TASK_ID");
        if let Some(v) = get("SPOOR_ATTEMPT") {
            c.task.attempt = Some(parse("SPOOR_ATTEMPT", &v)?);
        }
        if let Some(v) = get("SPOOR_DEPTH") {
            c.task.depth = Some(parse("SPOOR_DEPTH", &v)?);
        }
        c.version = get("SPOOR_VERSION");
        c.instance = get("SPOOR_INSTANCE")
            .or_else(|| get("AWS_LAMBDA_LOG_STREAM_NAME"))
            .or_else(|| get("HOSTNAME"));
        if let Some(v) = get("SPOOR_LEVEL") {
            c.filter = parse("SPOOR_LEVEL", &v)?;
        }
        if let Some(v) = get("SPOOR_LOCAL_TIME") {
            c.local_time = parse("SPOOR_LOCAL_TIME", &v)?;
        }
        if let Some(v) = get("SPOOR_FLUSH_TIMEOUT") {
            c.flush_timeout = parse_duration(&v).ok_or_else(|| ConfigError {
                key: "SPOOR_FLUSH_TIMEOUT",
                value: v.clone(),
                reason: "expected a duration such as `2s` or `500ms`".into(),
            })?;
        }
        if let Some(v) = get("SPOOR_QUEUE_CAPACITY") {
            c.queue_capacity = parse("SPOOR_QUEUE_CAPACITY", &v)?;
        }
        if let Some(v) = get("SPOOR_DEBUG_BUFFER") {
            let bytes: usize = parse("SPOOR_DEBUG_BUFFER", &v)?;
            c.debug_buffer_bytes = (bytes > 0).then_some(bytes);
        }
        Ok(c)
    }

    /// Sets [`Config::version`] when nothing (such as `SPOOR_VERSION`) set it yet; this is
    /// how [`crate::init!`] supplies the calling crate's version.
    pub fn with_default_version(mut self, version: impl Into<String>) -> Config {
        if self.version.is_none() {
            self.version = Some(version.into());
        }
        self
    }
}

fn parse<T: FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        key,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// `1500ms`, `2s`, `1m`; a bare number is milliseconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit.trim() {
        "" | "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// The version string the [`crate::init!`] macro passes: the crate version, with
/// `+<revision>` when a git revision was given at build time.
#[doc(hidden)]
pub fn build_version(crate_version: &str, git_revision: Option<&str>) -> String {
    match git_revision.map(str::trim).filter(|r| !r.is_empty()) {
        Some(rev) if !crate_version.contains('+') => format!("{crate_version}+{rev}"),
        _ => crate_version.to_string(),
    }
}

/// The system's host name: the kernel's on Linux, else `/etc/hostname`, else `HOSTNAME`,
/// else `localhost`. (Read from files because the system call needs `unsafe`, which this
/// workspace forbids.)
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .chain(std::env::var("HOSTNAME").ok())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_match_the_docs() {
        let c = from(&[]).expect("defaults");
        assert_eq!(c.agent.to_string(), "unix:/var/lib/spoor-agent/agent.sock");
        assert_eq!(c.spill.dir, std::env::temp_dir().join("spoor-spill"));
        assert_eq!(c.flush_timeout, Duration::from_secs(2));
        assert_eq!(c.queue_capacity, 8192);
        assert!(!c.local_time);
        assert!(c.debug_buffer_bytes.is_none());
        assert!(c.panic_hook);
        assert!(!c.host.is_empty());
        assert!(c.filter.would_enable("any", &tracing::Level::INFO));
        assert!(!c.filter.would_enable("any", &tracing::Level::DEBUG));
    }

    #[test]
    fn reads_every_variable() {
        let c = from(&[
            ("SPOOR_AGENT", "tcp:127.0.0.1:8741"),
            ("SPOOR_SPILL_DIR", "/tmp/s"),
            ("SPOOR_TASK", "parse_email"),
            ("SPOOR_TASK_ID", "run-1"),
            ("SPOOR_ATTEMPT", "2"),
            ("SPOOR_DEPTH", "1"),
            ("SPOOR_VERSION", "1.4.2+a1b2c3d"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/30/[$LATEST]abc"),
            ("HOSTNAME", "ignored-when-lambda"),
            ("SPOOR_LEVEL", "warn,my_task=debug"),
            ("SPOOR_LOCAL_TIME", "true"),
            ("SPOOR_FLUSH_TIMEOUT", "500ms"),
            ("SPOOR_QUEUE_CAPACITY", "16"),
            ("SPOOR_DEBUG_BUFFER", "65536"),
        ])
        .expect("valid");
        assert_eq!(c.agent, AgentAddr::Tcp("127.0.0.1:8741".into()));
        assert_eq!(c.spill.dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.task.task.as_deref(), Some("parse_email"));
        assert_eq!(c.task.task_id.as_deref(), Some("run-1"));
        assert_eq!((c.task.attempt, c.task.depth), (Some(2), Some(1)));
        assert_eq!(c.version.as_deref(), Some("1.4.2+a1b2c3d"));
        assert_eq!(c.instance.as_deref(), Some("2026/11/30/[$LATEST]abc"));
        assert!(c.filter.would_enable("my_task::x", &tracing::Level::DEBUG));
        assert!(!c.filter.would_enable("other", &tracing::Level::INFO));
        assert!(c.local_time);
        assert_eq!(c.flush_timeout, Duration::from_millis(500));
        assert_eq!(c.queue_capacity, 16);
        assert_eq!(c.debug_buffer_bytes, Some(65536));
        let c = c.with_default_version("9.9.9");
        assert_eq!(
            c.version.as_deref(),
            Some("1.4.2+a1b2c3d"),
            "the environment wins"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let check = |key: &'static str, value: &str| {
            let err = from(&[(key, value)]).expect_err(value);
            assert_eq!(err.key, key);
            assert!(err.to_string().starts_with(key), "{err}");
        };
        check("SPOOR_AGENT", "localhost:8741");
        check("SPOOR_AGENT", "tcp:nohost");
        check("SPOOR_AGENT", "unix:");
        check("SPOOR_ATTEMPT", "first");
        check("SPOOR_LEVEL", "info,my_task=loud");
        check("SPOOR_FLUSH_TIMEOUT", "soon");
        check("SPOOR_LOCAL_TIME", "maybe");
    }

    #[test]
    fn versions_carry_the_git_revision() {
        assert_eq!(build_version("1.4.2", Some("a1b2c3d")), "1.4.2+a1b2c3d");
        assert_eq!(build_version("1.4.2", None), "1.4.2");
        assert_eq!(build_version("1.4.2", Some(" ")), "1.4.2");
        assert_eq!(build_version("1.4.2+meta", Some("a1b")), "1.4.2+meta");
    }
}
