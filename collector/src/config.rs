//! The collector's configuration: typed, checked once when it loads (file < `SPOOR_*`
//! environment < flags; the binary applies the last two), with errors naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::secret::Secret;

/// Everything the collector needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the audit log, index and keys live.
    pub data_dir: PathBuf,
    /// HTTP listen address (default `127.0.0.1:8740`).
    pub listen: SocketAddr,
    /// API tokens with their scopes. With none, the collector runs open on loopback only.
    pub tokens: Vec<TokenConfig>,
    /// Largest accepted ingest body after decompression, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// Lines longer than this are cut and flagged `truncated=true` (default 64 KiB).
    pub max_line_bytes: usize,
    /// How the index follows the audit log.
    pub index: IndexConfig,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<TlsConfig>,
    /// Alert rules and notifiers (`[alerts]`).
    pub alerts: crate::alerts::AlertsConfig,
    /// Dead-letter store: replay targets (`[[dlq.target]]`).
    pub dlq: crate::dlq::DlqConfig,
    /// Cluster mode (`[cluster]`): NATS JetStream between ingest and the shard owners.
    /// Absent, the collector runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The API's certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("spoor-data/collector"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8740)),
            tokens: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            max_line_bytes: 64 * 1024,
            index: IndexConfig::default(),
            audit: AuditConfig::default(),
            tls: None,
            alerts: crate::alerts::AlertsConfig::default(),
            dlq: crate::dlq::DlqConfig::default(),
            cluster: None,
        }
    }
}

/// A bearer token and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and audit records (never the token itself).
    pub name: String,
    /// `ingest`, `read`, `admin` (admin implies the others).
    pub scopes: Vec<Scope>,
    /// Name of an environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Path of a file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token itself (discouraged: config files get copied around).
    #[serde(default)]
    pub token: Option<String>,
}

impl TokenConfig {
    /// Where this token's value comes from.
    pub fn secret(&self) -> Result<Secret, ConfigError> {
        Secret::from_sources(
            &format!("tokens.{}", self.name),
            self.token_env.as_deref(),
            self.token_file.as_deref(),
            self.token.as_deref(),
        )
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Post batches to `/api/v1/ingest`.
    Ingest,
    /// Search, tail, read checkpoints.
    Read,
    /// Everything, including replays and silences.
    Admin,
}

/// How the index follows the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Longest time between an append and its line being searchable (default 500 ms).
    #[serde(with = "duration_text")]
    pub commit_interval: Duration,
    /// Commit early once this many documents are waiting (default 100,000).
    pub commit_docs: usize,
    /// Memory for tantivy's writer, in bytes (default 64 MiB).
    pub writer_memory_bytes: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(500),
            commit_docs: 100_000,
            writer_memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Audit log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint after this many records (default 10,000).
    pub checkpoint_records: u64,
    /// ... or after this long (default 10 s).
    #[serde(with = "duration_text")]
    pub checkpoint_interval: Duration,
    /// Roll to a new segment file at this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Remove audit segments (and their index documents) older than this; unset keeps
    /// everything.
    #[serde(default, with = "duration_text::option")]
    pub retention: Option<Duration>,
    /// How often retention runs (default 1 m).
    #[serde(with = "duration_text")]
    pub retention_check: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_records: 10_000,
            checkpoint_interval: Duration::from_secs(10),
            segment_bytes: 64 * 1024 * 1024,
            retention: None,
            retention_check: Duration::from_secs(60),
        }
    }
}

impl CollectorConfig {
    /// Reads a TOML file; a missing file is an error, unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })?;
        config.alerts.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Checks what types cannot: the rules of DESIGN.md on tokens and listen addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "listen = {} is not a loopback address and no tokens are configured; add \
                 [[tokens]] with token_env or token_file, or listen on 127.0.0.1",
                self.listen
            )));
        }
        for t in &self.tokens {
            if t.scopes.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "tokens.{}: scopes is empty",
                    t.name
                )));
            }
        }
        self.dlq.validate()?;
        self.alerts.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.max_body_bytes == 0 || self.max_line_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_body_bytes and max_line_bytes must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// Durations written as `500ms`, `15s`, `5m`, `4h`, `1d` in config files.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parses `500ms`, `15s`, `5m`, `4h`, `1d`.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = text.split_at(split);
        let n: u64 = n.parse().ok()?;
        let secs = match unit {
            "ms" => return Some(Duration::from_millis(n)),
            "s" => n,
            "m" => n.checked_mul(60)?,
            "h" => n.checked_mul(3600)?,
            "d" => n.checked_mul(86_400)?,
            _ => return None,
        };
        Some(Duration::from_secs(secs))
    }

    /// Serde hook for optional durations.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        /// Serde hook.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration (write it like 500ms, 15s, 5m, 4h or 1d)"
                ))
            })
        }
    }

    /// Serde hook.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration (write it like 500ms, 15s, 5m, 4h or 1d)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_docs() {
        let c = CollectorConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8740");
        assert_eq!(c.max_body_bytes, 16 << 20);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn reads_tokens_and_durations() {
        let c = CollectorConfig::from_toml(
            r#"
            listen = "0.0.0.0:8740"
            [[tokens]]
            name = "agents"
            scopes = ["ingest"]
            token_env = "SPOOR_AGENT_TOKEN"
            [index]
            commit_interval = "250ms"
            "#,
        )
        .expect("parses");
        assert_eq!(c.index.commit_interval, Duration::from_millis(250));
        assert_eq!(c.tokens[0].scopes, [Scope::Ingest]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn reads_the_whole_collector_config_of_the_design() {
        // The collector configuration block of DESIGN.md, verbatim.
        let c = CollectorConfig::from_toml(
            r#"
[alerts]
interval = "15s"                      # how often rules are evaluated

[[alerts.notifier]]
name = "ops-chat"
kind = "slack"                        # slack | mattermost | discord | teams | webhook
url_env = "SPOOR_OPS_WEBHOOK"         # or url_file = "...", or url = "..." (discouraged)

[[alerts.rule]]
name = "charge-errors"
kind = "threshold"                    # threshold | ratio | spike | absence
query = "level:error task:charge"
# for kind = "ratio":  of = "task:charge"  (the denominator query)
window = "5m"
op = ">"                              # > >= < <=
value = 10
for = "1m"
group_by = ["task"]
notify = ["ops-chat"]
repeat_interval = "4h"
send_resolved = true

[[dlq.target]]
task = "parse_email"                  # or "*" for the default target
url = "http://127.0.0.1:9000/tasks/parse_email"
max_replays = 3
"#,
        )
        .expect("the DESIGN.md example parses");
        assert!(c.validate().is_ok());
        let t = c.dlq.target_for("parse_email").expect("target");
        assert_eq!((t.max_replays, t.method.as_str()), (3, "POST"));
        assert!(c.dlq.target_for("other").is_none());
        let r = &c.alerts.rules[0];
        assert_eq!(c.alerts.interval, Duration::from_secs(15));
        assert_eq!(
            c.alerts.notifiers[0].kind,
            crate::alerts::NotifierKind::Slack
        );
        assert_eq!(
            (r.kind, r.op),
            (crate::alerts::RuleKind::Threshold, crate::alerts::Op::Gt)
        );
        assert_eq!(
            (r.window, r.for_),
            (Duration::from_secs(300), Duration::from_secs(60))
        );
        assert_eq!(r.repeat_interval, Some(Duration::from_secs(4 * 3600)));
    }

    #[test]
    fn unknown_rule_kinds_are_named() {
        let e = CollectorConfig::from_toml("[[alerts.rule]]\nname = \"x\"\nkind = \"often\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("often"), "{e}");
    }

    #[test]
    fn refuses_open_non_loopback_and_unknown_keys() {
        let c = CollectorConfig::from_toml("listen = \"0.0.0.0:8740\"").expect("parses");
        assert!(c.validate().unwrap_err().to_string().contains("no tokens"));
        let e = CollectorConfig::from_toml("lisen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = CollectorConfig::from_toml("[index]\ncommit_interval = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }
}
