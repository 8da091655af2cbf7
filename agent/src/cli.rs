//! The agent's command-line flags, shared by `spoor agent` and the slim `spoor-agent`
//! binary: flags and `SPOOR_*` variables applied over the config file (flag >
//! environment > file > default), and the source a SIGHUP reload builds from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::redact::{Action, parse_name};
use crate::{AgentConfig, Compression, ConfigError, ConfigSource, FullPolicy, ListenAddr};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Where the disk buffer, file positions and agent ID live.
    #[arg(long, env = "SPOOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The collector's base URL, e.g. http://127.0.0.1:8740.
    #[arg(long, env = "SPOOR_COLLECTOR")]
    collector: Option<String>,
    /// Input: `tcp:ADDR` or `unix:PATH` (repeatable) [default: tcp:127.0.0.1:8741 and
    /// unix:DATA_DIR/agent.sock].
    #[arg(long = "listen", value_parser = parse_listen)]
    listen: Vec<ListenAddr>,
    /// Files to tail (repeatable, or comma-separated; wildcards in the file name). Added to
    /// the file's `files`.
    #[arg(long = "file", env = "SPOOR_FILES", value_delimiter = ',')]
    files: Vec<String>,
    /// Accept syslog over TCP on this address (RFC 5424/3164).
    #[arg(long, env = "SPOOR_SYSLOG")]
    syslog: Option<SocketAddr>,
    /// An SDK spill directory to pick up (repeatable, or comma-separated). Added to the
    /// file's `spill_dirs`.
    #[arg(long = "spill-dir", env = "SPOOR_SPILL_DIRS", value_delimiter = ',')]
    spill_dirs: Vec<PathBuf>,
    /// Address for /metrics and /healthz [default: 127.0.0.1:8742].
    #[arg(long, env = "SPOOR_ADMIN")]
    admin: Option<SocketAddr>,
    /// Longer lines are cut and flagged truncated=true [default: 65536].
    #[arg(long, env = "SPOOR_MAX_LINE_BYTES")]
    max_line_bytes: Option<usize>,
    /// Most socket connections open at once [default: 1024].
    #[arg(long, env = "SPOOR_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most lines in one batch [default: 1000].
    #[arg(long, env = "SPOOR_BATCH_MAX_EVENTS")]
    batch_max_events: Option<usize>,
    /// Most uncompressed bytes in one batch [default: 1048576].
    #[arg(long, env = "SPOOR_BATCH_MAX_BYTES")]
    batch_max_bytes: Option<usize>,
    /// Longest wait for a batch to fill, e.g. 200ms [default: 200ms].
    #[arg(long, env = "SPOOR_BATCH_MAX_WAIT", value_parser = parse_duration)]
    batch_max_wait: Option<Duration>,
    /// Size cap of the disk buffer in bytes [default: 1073741824].
    #[arg(long, env = "SPOOR_BUFFER_MAX_BYTES")]
    buffer_max_bytes: Option<u64>,
    /// Size of one buffer segment in bytes [default: 16777216].
    #[arg(long, env = "SPOOR_BUFFER_MAX_SEGMENT_BYTES")]
    buffer_max_segment_bytes: Option<u64>,
    /// Group commit interval of the buffer, e.g. 100ms; 0ms fsyncs every batch.
    #[arg(long, env = "SPOOR_BUFFER_FSYNC_INTERVAL", value_parser = parse_duration)]
    buffer_fsync_interval: Option<Duration>,
    /// When the buffer is full: block, drop_newest or drop_oldest [default: block].
    #[arg(long, env = "SPOOR_BUFFER_FULL_POLICY", value_parser = parse_name::<FullPolicy>)]
    buffer_full_policy: Option<FullPolicy>,
    /// Encrypt the disk buffer (true or false) [default: true].
    #[arg(long, env = "SPOOR_BUFFER_ENCRYPTION")]
    buffer_encryption: Option<bool>,
    /// File with the current buffer key (64 hex digits, mode 0600).
    #[arg(long, env = "SPOOR_BUFFER_KEY_FILE")]
    buffer_key_file: Option<PathBuf>,
    /// Older buffer key files whose segments must stay readable (repeatable, or
    /// comma-separated; replaces the file's `encryption.old_key_files`).
    #[arg(
        long = "buffer-old-key-file",
        env = "SPOOR_BUFFER_OLD_KEY_FILES",
        value_delimiter = ','
    )]
    buffer_old_key_files: Vec<PathBuf>,
    /// Body compression: zstd, gzip or none [default: zstd].
    #[arg(long, env = "SPOOR_COMPRESSION", value_parser = parse_name::<Compression>)]
    compression: Option<Compression>,
    /// Batches sent at once [default: 4].
    #[arg(long, env = "SPOOR_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// File holding the bearer token (SPOOR_TOKEN, the token itself, wins over it).
    #[arg(long, env = "SPOOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an https:// collector.
    #[arg(long, env = "SPOOR_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Redact secrets before the buffer (true or false) [default: true].
    #[arg(long, env = "SPOOR_REDACTION")]
    redaction: Option<bool>,
    /// Built-in detectors, applied in order over the file's settings: `NAME=SETTING`
    /// (off, mask, hash, drop_field, drop_event, encrypt), `NAME` for `NAME=mask`, `all`
    /// for every detector; e.g. `all=off,card,email=hash`.
    #[arg(long, env = "SPOOR_REDACT_DETECTORS", value_name = "LIST")]
    redact_detectors: Option<String>,
    /// Field names whose values are always redacted (comma-separated; replaces the list).
    #[arg(
        long,
        env = "SPOOR_REDACT_FIELDS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    redact_fields: Option<Vec<String>>,
    /// Action for those fields: mask, hash, drop_field, drop_event or encrypt.
    #[arg(long, env = "SPOOR_REDACT_FIELD_ACTION", value_parser = parse_name::<Action>)]
    redact_field_action: Option<Action>,
    /// Key file of the `hash` action (64 hex digits, mode 0600).
    #[arg(long, env = "SPOOR_REDACT_HASH_KEY_FILE")]
    hash_key_file: Option<PathBuf>,
    /// Key file of the `encrypt` action (64 hex digits, mode 0600).
    #[arg(long, env = "SPOOR_REDACT_ENCRYPT_KEY_FILE")]
    encrypt_key_file: Option<PathBuf>,
    /// TOML configuration file; flags and SPOOR_* variables override it. SIGHUP reads it
    /// again.
    #[arg(long, env = "SPOOR_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration, print the effective settings and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    text.parse::<ListenAddr>().map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::duration::parse(text)
        .ok_or_else(|| format!("`{text}` is not a duration (expected e.g. 250ms, 1s, 5m, 1h)"))
}

/// Builds the agent's configuration: default < file < environment < flags (clap picks a
/// flag over its variable), then resolves the token and checks the result.
pub fn load(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let mut config = AgentConfig::read_file(args.config.as_deref())?;
    args.apply(&mut config)?;
    config.finish()?;
    Ok(config)
}

/// The source SIGHUP reloads from: the same file, with these flags and variables on top.
pub fn config_source(args: &AgentArgs) -> ConfigSource {
    let args = args.clone();
    Arc::new(move || load(&args))
}

/// What `--check-config` prints: the verdict, then every effective setting (secrets show
/// as `***`).
pub fn check_report(config: &AgentConfig) -> String {
    format!("configuration is valid\neffective configuration:\n{config:#?}\n")
}

impl AgentArgs {
    /// Sets what the flags and variables give over `config`.
    fn apply(&self, config: &mut AgentConfig) -> Result<(), ConfigError> {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        set(&mut config.collector, &self.collector);
        if !self.listen.is_empty() {
            config.listen = Some(self.listen.clone());
        }
        config.files.extend(self.files.iter().cloned());
        config.spill_dirs.extend(self.spill_dirs.iter().cloned());
        if let Some(a) = self.syslog {
            config.syslog = Some(a);
        }
        set(&mut config.admin, &self.admin);
        set(&mut config.max_line_bytes, &self.max_line_bytes);
        set(&mut config.max_connections, &self.max_connections);
        set(&mut config.batch.max_events, &self.batch_max_events);
        set(&mut config.batch.max_bytes, &self.batch_max_bytes);
        set(&mut config.batch.max_wait, &self.batch_max_wait);
        set(&mut config.buffer.max_bytes, &self.buffer_max_bytes);
        set(
            &mut config.buffer.max_segment_bytes,
            &self.buffer_max_segment_bytes,
        );
        set(
            &mut config.buffer.fsync_interval,
            &self.buffer_fsync_interval,
        );
        set(&mut config.buffer.when_full, &self.buffer_full_policy);
        set(&mut config.encryption.enabled, &self.buffer_encryption);
        if let Some(f) = &self.buffer_key_file {
            config.encryption.key_file = Some(f.clone());
        }
        if !self.buffer_old_key_files.is_empty() {
            config.encryption.old_key_files = self.buffer_old_key_files.clone();
        }
        set(&mut config.forward.compression, &self.compression);
        set(&mut config.forward.max_in_flight, &self.max_in_flight);
        if let Some(f) = &self.token_file {
            config.forward.token_file = Some(f.clone());
        }
        if let Some(f) = &self.ca_file {
            config.forward.ca_file = Some(f.clone());
        }
        set(&mut config.redaction, &self.redaction);
        if let Some(list) = &self.redact_detectors {
            config
                .redact
                .detectors
                .apply_list(list)
                .map_err(|message| ConfigError::Invalid {
                    key: "redact.detectors",
                    message,
                })?;
        }
        if let Some(fields) = &self.redact_fields {
            config.redact.fields = fields
                .iter()
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect();
        }
        set(&mut config.redact.field_action, &self.redact_field_action);
        if let Some(f) = &self.hash_key_file {
            config.redact.hash_key_file = Some(f.clone());
        }
        if let Some(f) = &self.encrypt_key_file {
            config.redact.encrypt_key_file = Some(f.clone());
        }
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM: the daemons' shutdown trigger.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;
    use crate::redact::DetectorSetting;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    /// The configuration from a file holding `toml` and the flags `flags` (no variables
    /// are set by these tests; clap reads them, then flags win, which clap guarantees).
    fn effective(toml: &str, flags: &[&str]) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, toml).unwrap();
        let mut argv = vec!["agent", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).unwrap();
        load(&cli.args)
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let c = effective(
            "[batch]\nmax_events = 10\nmax_wait = \"1s\"\n[buffer]\nwhen_full = \"drop_newest\"\n[redact]\nfields = [\"pin\"]\n[redact.detectors]\nemail = \"hash\"\n",
            &[
                "--batch-max-events",
                "20",
                "--buffer-full-policy",
                "drop-oldest",
                "--redact-detectors",
                "ip,card=off",
                "--redact-field-action",
                "drop_field",
                "--buffer-key-file",
                "/k/a.key",
                "--buffer-old-key-file",
                "/k/b.key,/k/c.key",
            ],
        )
        .unwrap();
        // flag > file
        assert_eq!(c.batch.max_events, 20);
        assert_eq!(c.buffer.when_full, FullPolicy::DropOldest);
        assert_eq!(c.redact.detectors.ip, DetectorSetting::Mask);
        assert_eq!(c.redact.detectors.card, DetectorSetting::Off);
        assert_eq!(c.redact.field_action, Action::DropField);
        assert_eq!(c.encryption.key_file, Some(PathBuf::from("/k/a.key")));
        assert_eq!(c.encryption.old_key_files.len(), 2);
        // file > default where no flag is given
        assert_eq!(c.batch.max_wait, Duration::from_secs(1));
        assert_eq!(c.redact.detectors.email, DetectorSetting::Hash);
        assert_eq!(c.redact.fields, vec!["pin".to_string()]);
        // default where neither is given
        assert_eq!(c.batch.max_bytes, 1 << 20);
        assert_eq!(c.redact.detectors.jwt, DetectorSetting::Mask);
    }

    #[test]
    fn bad_flag_values_name_the_setting() {
        let e = effective("", &["--redact-detectors", "card,nope"]).unwrap_err();
        assert!(e.to_string().contains("redact.detectors"), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
        // The checks run on the effective values.
        let e = effective("", &["--batch-max-events", "0"]).unwrap_err();
        assert!(e.to_string().contains("batch.max_events"), "{e}");
        assert!(Cli::try_parse_from(["agent", "--buffer-full-policy", "sometimes"]).is_err());
    }

    #[test]
    fn detector_lists_apply_in_order() {
        let mut d = crate::redact::Detectors::default();
        d.apply_list("all=off, email=encrypt,jwt").unwrap();
        assert_eq!(d.card, DetectorSetting::Off);
        assert_eq!(d.email, DetectorSetting::Encrypt);
        assert_eq!(d.jwt, DetectorSetting::Mask);
        assert!(d.apply_list("card=shout").is_err());
    }

    #[test]
    fn check_report_hides_the_token() {
        let c = AgentConfig {
            token: Some(crate::Secret::new("hunter2")),
            ..AgentConfig::default()
        };
        let text = check_report(&c);
        assert!(text.starts_with("configuration is valid\n"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("max_events"), "{text}");
    }
}
