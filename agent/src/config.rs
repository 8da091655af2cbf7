//! The agent's configuration: every setting, its documented default, and its checks.
//!
//! [`AgentConfig::load`] reads one TOML file (or none: every field has a default), checks
//! it once and resolves the token. Errors name the offending key. The command line
//! ([`crate::cli`]) instead reads the file with [`AgentConfig::read_file`], applies its
//! flags and `SPOOR_*` environment variables on top (flag > environment > file > default)
//! and then calls [`AgentConfig::finish`], so the checks see the effective values. Per-component settings live beside their
//! components ([`BatchConfig`], [`ForwardConfig`]); this module holds the rest.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use crate::batch::BatchConfig;
use crate::buffer::BufferConfig;
pub use crate::forward::{Compression, ForwardConfig};

/// Environment variable holding the bearer token (wins over `forward.token_file`).
pub const TOKEN_ENV: &str = "SPOOR_TOKEN";

/// Everything the agent needs to run. `Default` gives the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Directory for the disk buffer, read positions, the agent ID, the dead-letter files
    /// and the default Unix socket. Default `/var/lib/spoor-agent`.
    pub data_dir: PathBuf,
    /// Base URL of the collector; batches go to `{collector}/api/v1/ingest`.
    /// Default `http://127.0.0.1:8740`.
    pub collector: String,
    /// Where to accept newline-delimited lines: `tcp:ADDR` or `unix:PATH`. Unset means the
    /// defaults `tcp:127.0.0.1:8741` and `unix:DATA_DIR/agent.sock` (see
    /// [`AgentConfig::listen_addrs`]); an empty list means no socket input.
    pub listen: Option<Vec<ListenAddr>>,
    /// Files to tail. Each is a path whose file name may hold `*` and `?` wildcards
    /// (`/var/log/app/*.log`); directories must be literal. Default none.
    pub files: Vec<String>,
    /// Spill directories of the SDK to pick up: their `spill-*.log` files are forwarded
    /// with `source=spill` and removed once the collector acknowledged all their lines.
    /// Default none.
    pub spill_dirs: Vec<PathBuf>,
    /// Address to accept syslog over TCP on (RFC 5424 and RFC 3164, octet-counted or
    /// newline framing). Default none.
    pub syslog: Option<SocketAddr>,
    /// Address of the admin HTTP server (`/healthz`, `/metrics`). Default `127.0.0.1:8742`.
    pub admin: SocketAddr,
    /// Longer lines are cut and flagged `truncated=true`; the rest of the line up to its
    /// newline is discarded and counted. Default 65536 (64 KiB).
    pub max_line_bytes: usize,
    /// Most socket connections open at once; more are refused. Default 1024.
    pub max_connections: usize,
    /// How lines are grouped into batches.
    pub batch: BatchConfig,
    /// The disk buffer between batching and forwarding.
    pub buffer: BufferSettings,
    /// How batches are sent to the collector.
    pub forward: ForwardConfig,
    /// Redact secrets and personal data before the buffer. Default `true`; only an
    /// explicit `redaction = false` turns it off.
    pub redaction: bool,
    /// The redaction rules (see [`crate::redact`]).
    pub redact: crate::redact::RedactConfig,
    /// Encryption at rest of the disk buffer (see [`crate::crypto`]).
    pub encryption: crate::crypto::EncryptionConfig,
    /// The bearer token, resolved by [`AgentConfig::load`] from `SPOOR_TOKEN` or
    /// `forward.token_file`. Never read from the TOML file itself.
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: PathBuf::from("/var/lib/spoor-agent"),
            collector: "http://127.0.0.1:8740".to_string(),
            listen: None,
            files: Vec::new(),
            spill_dirs: Vec::new(),
            syslog: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 8742)),
            max_line_bytes: 64 * 1024,
            max_connections: 1024,
            batch: BatchConfig::default(),
            buffer: BufferSettings::default(),
            forward: ForwardConfig::default(),
            redaction: true,
            redact: crate::redact::RedactConfig::default(),
            encryption: crate::crypto::EncryptionConfig::default(),
            token: None,
        }
    }
}

/// Disk buffer settings (the buffer itself is [`crate::buffer::DiskBuffer`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSettings {
    /// Size cap of the buffer's files in bytes. Default 1 GiB.
    pub max_bytes: u64,
    /// Size of one segment file in bytes. Default 16 MiB.
    pub max_segment_bytes: u64,
    /// Group commit: appends are fsynced at most this long after they are written.
    /// Default `100ms`; `0ms` fsyncs every batch.
    #[serde(with = "duration")]
    pub fsync_interval: Duration,
    /// What to do when the buffer is full. Default `block`.
    pub when_full: FullPolicy,
}

impl Default for BufferSettings {
    fn default() -> Self {
        let d = BufferConfig::default();
        BufferSettings {
            max_bytes: d.max_total_bytes,
            max_segment_bytes: d.max_segment_bytes,
            fsync_interval: d.fsync_interval,
            when_full: FullPolicy::Block,
        }
    }
}

impl BufferSettings {
    /// The disk buffer's own configuration.
    pub fn buffer_config(&self) -> BufferConfig {
        BufferConfig {
            max_segment_bytes: self.max_segment_bytes,
            max_total_bytes: self.max_bytes,
            fsync_interval: self.fsync_interval,
            keep_from_id: None,
        }
    }
}

/// The full-buffer policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Backpressure: stop reading inputs until the forwarder frees room.
    Block,
    /// Drop the batch that does not fit (counted).
    DropNewest,
    /// Drop the oldest unacknowledged segment to make room (counted).
    DropOldest,
}

/// A socket to accept lines on: `tcp:ADDR` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address such as `127.0.0.1:8741`.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// A listen address that is not `tcp:ADDR` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a listen address (expected tcp:HOST:PORT or unix:PATH)")]
pub struct BadListenAddr(pub String);

impl FromStr for ListenAddr {
    type Err = BadListenAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse()
                .map(ListenAddr::Tcp)
                .map_err(|_| BadListenAddr(s.to_string()))
        } else if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            Ok(ListenAddr::Unix(PathBuf::from(path)))
        } else {
            Err(BadListenAddr(s.to_string()))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret (the bearer token) that never shows in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file (config or token file) could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse or a key has the wrong type; the message names the key.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `batch.max_events`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl AgentConfig {
    /// Reads the TOML file (or starts from the defaults without one), checks it and
    /// resolves the token from `SPOOR_TOKEN` or `forward.token_file`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = Self::read_file(file)?;
        config.finish()?;
        Ok(config)
    }

    /// Reads and parses the TOML file (or the defaults without one), without resolving
    /// the token or checking values: callers apply their overrides, then call
    /// [`AgentConfig::finish`].
    pub fn read_file(file: Option<&Path>) -> Result<Self, ConfigError> {
        Ok(match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
            None => AgentConfig::default(),
        })
    }

    /// Resolves the token from `SPOOR_TOKEN` or `forward.token_file` and checks every
    /// value.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        self.token = self.resolve_token(std::env::var(TOKEN_ENV).ok())?;
        self.validate()
    }

    /// Parses TOML text without touching the environment or checking values.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The token from `env_value` (the value of `SPOOR_TOKEN`) or else `forward.token_file`
    /// (trimmed).
    pub fn resolve_token(&self, env_value: Option<String>) -> Result<Option<Secret>, ConfigError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Ok(Some(Secret(v.trim().to_string())));
        }
        let Some(path) = &self.forward.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::Invalid {
                key: "forward.token_file",
                message: format!("{} is empty", path.display()),
            });
        }
        Ok(Some(Secret(token.to_string())))
    }

    /// Checks ranges and formats; call again after changing fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        match reqwest::Url::parse(&self.collector) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return invalid("collector", "expected a URL such as http://127.0.0.1:8740"),
        }
        if let Err(e) = crate::redact::check_config(&self.redact) {
            return invalid("redact.rules", &e.to_string());
        }
        if self.max_line_bytes < 16 {
            return invalid("max_line_bytes", "must be at least 16");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.batch.max_events == 0 {
            return invalid("batch.max_events", "must be at least 1");
        }
        if self.batch.max_bytes == 0 {
            return invalid("batch.max_bytes", "must be at least 1");
        }
        if self.batch.max_bytes as u64 + self.max_line_bytes as u64 + 1024
            > self.buffer.max_segment_bytes
        {
            return invalid(
                "buffer.max_segment_bytes",
                "must exceed batch.max_bytes + max_line_bytes with room for framing",
            );
        }
        if self.buffer.max_bytes < 2 * self.buffer.max_segment_bytes {
            return invalid(
                "buffer.max_bytes",
                "must be at least twice buffer.max_segment_bytes",
            );
        }
        if self.forward.max_in_flight == 0 {
            return invalid("forward.max_in_flight", "must be at least 1");
        }
        for pattern in &self.files {
            if let Err(message) = crate::inputs::file::GlobPattern::parse(pattern) {
                return Err(ConfigError::Invalid {
                    key: "files",
                    message,
                });
            }
        }
        Ok(())
    }

    /// The socket addresses to listen on, with the defaults filled in when `listen` is unset.
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        match &self.listen {
            Some(list) => list.clone(),
            None => vec![
                ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8741))),
                ListenAddr::Unix(self.data_dir.join("agent.sock")),
            ],
        }
    }
}

/// Serde for durations written as `"250ms"`, `"1s"`, `"5m"`, `"1h"` or a number of
/// milliseconds.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(s) => parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration (expected e.g. 250ms, 1s, 5m, 1h)"
                ))
            }),
        }
    }

    /// Parses `NUMBER UNIT` with unit `ms`, `s`, `m` or `h`.
    pub(crate) fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let ms = match unit.trim() {
            "ms" => n,
            "s" => n.checked_mul(1000)?,
            "m" => n.checked_mul(60_000)?,
            "h" => n.checked_mul(3_600_000)?,
            _ => return None,
        };
        Some(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_docs() {
        let c = AgentConfig::default();
        assert_eq!(c.admin.to_string(), "127.0.0.1:8742");
        assert_eq!(c.max_line_bytes, 65536);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.batch.max_events, 1000);
        assert_eq!(c.batch.max_bytes, 1 << 20);
        assert_eq!(c.batch.max_wait, Duration::from_millis(200));
        assert_eq!(c.forward.max_in_flight, 4);
        assert_eq!(c.forward.compression, Compression::Zstd);
        assert_eq!(c.buffer.when_full, FullPolicy::Block);
        assert_eq!(
            c.listen_addrs(),
            vec![
                "tcp:127.0.0.1:8741".parse().expect("valid"),
                ListenAddr::Unix(PathBuf::from("/var/lib/spoor-agent/agent.sock")),
            ]
        );
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn parses_a_full_file() {
        let c = AgentConfig::from_toml(
            r#"
            data_dir = "/tmp/a"
            collector = "http://10.0.0.1:8740"
            listen = ["tcp:0.0.0.0:9000", "unix:/run/spoor.sock"]
            files = ["/var/log/*.log"]
            max_line_bytes = 1024
            [batch]
            max_events = 10
            max_wait = "1s"
            [buffer]
            when_full = "drop_oldest"
            fsync_interval = 0
            [forward]
            compression = "gzip"
            max_in_flight = 2
            "#,
        )
        .expect("parses");
        assert_eq!(
            c.listen_addrs()[1],
            ListenAddr::Unix("/run/spoor.sock".into())
        );
        assert_eq!(c.batch.max_wait, Duration::from_secs(1));
        assert_eq!(c.buffer.fsync_interval, Duration::ZERO);
        assert_eq!(c.buffer.when_full, FullPolicy::DropOldest);
        assert_eq!(c.forward.compression, Compression::Gzip);
        c.validate().expect("valid");
    }

    #[test]
    fn errors_name_the_key() {
        let e = AgentConfig::from_toml("[batch]\nmax_evnts = 3\n").expect_err("unknown key");
        assert!(e.contains("max_evnts"), "{e}");
        let e = AgentConfig::from_toml("listen = [\"udp:1\"]\n").expect_err("bad addr");
        assert!(e.contains("listen"), "{e}");
        let mut c = AgentConfig::default();
        c.batch.max_events = 0;
        let e = c.validate().expect_err("invalid");
        assert!(e.to_string().contains("batch.max_events"), "{e}");
    }

    #[test]
    fn listen_addrs_parse() {
        assert_eq!(
            "unix:/a/b".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/a/b".into()))
        );
        assert!("tcp:nope".parse::<ListenAddr>().is_err());
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("127.0.0.1:1".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn secret_is_hidden_and_env_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let mut c = AgentConfig::default();
        c.forward.token_file = Some(file);
        let t = c.resolve_token(None).expect("reads").expect("some");
        assert_eq!(t.expose(), "from-file");
        assert_eq!(format!("{t:?}"), "***");
        let t = c
            .resolve_token(Some("env".into()))
            .expect("ok")
            .expect("some");
        assert_eq!(t.expose(), "env");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration::parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(duration::parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(duration::parse("5"), None);
        assert_eq!(duration::parse("x"), None);
    }
}
