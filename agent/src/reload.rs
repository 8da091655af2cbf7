//! Configuration reload on SIGHUP: the configuration is built again from its source (the
//! `--config` file with the flags and `SPOOR_*` variables the agent started with still
//! on top), checked exactly as at start, and what can change while the agent runs is
//! applied. Everything else keeps its old value until a restart.
//!
//! - **Applied at once**: `redaction` and all of `[redact]` (detectors, field names, field
//!   action, custom rules, key files; keys are read again). The new redactor is built in
//!   full first and then swapped in atomically: a line being redacted at that instant
//!   finishes with the old rules, every later line gets the new ones. Counts per rule
//!   carry over to the rules of the same name.
//! - **Applied from the next line**: `[batch]` (checked against the buffer the agent runs
//!   with), handed to the batcher over a watch channel.
//! - **Applied at the next scan**: globs added to `files` (the old ones all kept), when the
//!   file input runs (it does when `files` or `spill_dirs` was set at start). Files the new
//!   globs match are read from their start, like any file found while running.
//! - **Needs a restart** (logged per key with "needs restart", old value kept): the data
//!   directory, collector URL and token, listen/syslog/admin addresses, removed or changed
//!   file globs (or any glob when no file input runs), spill directories, line and
//!   connection limits, `[buffer]`, `[forward]` and `[encryption]`.
//! - **Rejected**: a configuration that does not load (syntax, unknown key, invalid value,
//!   a key file that cannot be read) is refused as a whole with the reason in the log, and
//!   the old one stays in force.
//!
//! Each reload is counted in `spoor_agent_config_reloads_total{result="ok|error"}`.

use std::sync::Arc;

use tokio::sync::watch;

use crate::batch::BatchConfig;
use crate::config::{AgentConfig, ConfigError};
use crate::inputs::file::GlobPattern;
use crate::metrics::{Metrics, inc};
use crate::redact::{RedactError, Redactor, RedactorSlot};

/// Where a reload gets the new configuration from: the same steps that built the first
/// one (file < environment < flags).
pub type ConfigSource = Arc<dyn Fn() -> Result<AgentConfig, ConfigError> + Send + Sync>;

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new configuration does not load or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new redaction rules could not be built.
    #[error("redaction")]
    Redact(#[from] RedactError),
    /// The blocking task building the configuration stopped.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReloadReport {
    /// Settings that changed in the source but keep their old value until a restart.
    pub(crate) needs_restart: Vec<&'static str>,
    /// Whether the redaction settings changed.
    pub(crate) redaction_changed: bool,
    /// Whether `[batch]` changed (and was applied).
    pub(crate) batch_changed: bool,
    /// File globs added (and handed to the file input).
    pub(crate) files_added: Vec<String>,
}

/// Applies reloads to the running agent.
pub(crate) struct Reloader {
    pub(crate) source: Option<ConfigSource>,
    /// The configuration in force.
    pub(crate) current: AgentConfig,
    pub(crate) redactor: RedactorSlot,
    /// The batcher's limits.
    pub(crate) batch_tuning: watch::Sender<BatchConfig>,
    /// New globs for the running file input (`None` when it does not run).
    pub(crate) file_globs: Option<std::sync::mpsc::Sender<GlobPattern>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Reloader {
    /// Catches SIGHUP from now on (its default action would end the agent); call it
    /// early, before the agent is ready, and hand the result to [`Reloader::run`].
    pub(crate) fn catch_sighup() -> Option<tokio::signal::unix::Signal> {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGHUP; it will end the agent.");
                None
            }
        }
    }

    /// Reloads on every SIGHUP until the task is aborted.
    pub(crate) async fn run(mut self, hup: Option<tokio::signal::unix::Signal>) {
        let Some(mut hup) = hup else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration.");
            self.reload_and_log().await;
        }
    }

    /// One reload, logged and counted.
    pub(crate) async fn reload_and_log(&mut self) {
        match self.reload().await {
            Ok(report) => {
                inc(&self.metrics.config_reloads_ok, 1);
                for key in &report.needs_restart {
                    tracing::warn!(
                        key,
                        "Configuration reload: this setting changed but needs restart; the old value stays in force until then."
                    );
                }
                tracing::info!(
                    redaction_changed = report.redaction_changed,
                    batch_changed = report.batch_changed,
                    files_added = report.files_added.len(),
                    needs_restart = report.needs_restart.len(),
                    "Configuration reloaded."
                );
            }
            Err(e) => {
                inc(&self.metrics.config_reloads_error, 1);
                tracing::error!(
                    error = %error_chain(&e),
                    "Configuration reload rejected; the previous configuration stays in force."
                );
            }
        }
    }

    /// Loads the new configuration, builds what it needs, and only then swaps it in.
    pub(crate) async fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let Some(source) = self.source.clone() else {
            tracing::warn!("No configuration source to reload from; nothing changed.");
            return Ok(ReloadReport::default());
        };
        let data_dir = self.current.data_dir.clone();
        let (new, redactor) = tokio::task::spawn_blocking(move || {
            let new = source()?;
            let redactor = if new.redaction {
                Some(Arc::new(Redactor::new(&new.redact, &data_dir)?))
            } else {
                None
            };
            Ok::<_, ReloadError>((new, redactor))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;

        let mut report = ReloadReport {
            needs_restart: needs_restart(&self.current, &new),
            redaction_changed: self.current.redaction != new.redaction
                || self.current.redact != new.redact,
            batch_changed: self.current.batch != new.batch,
            files_added: Vec::new(),
        };
        let mut added_globs = Vec::new();
        if self.current.files != new.files {
            match (
                added_files(&self.current.files, &new.files),
                &self.file_globs,
            ) {
                (Some(added), Some(_)) => {
                    for glob in &added {
                        // Checked by `validate` already; parsed again for the input.
                        let pattern =
                            GlobPattern::parse(glob).map_err(|message| ConfigError::Invalid {
                                key: "files",
                                message,
                            })?;
                        added_globs.push(pattern);
                    }
                    report.files_added = added;
                }
                _ => report.needs_restart.insert(0, "files"),
            }
        }
        if report.batch_changed {
            // The new limits must fit the buffer that keeps running, not the new file's.
            let mut effective = self.current.clone();
            effective.batch = new.batch.clone();
            effective.validate()?;
        }
        // Nothing can fail from here on: apply everything.
        if let Some(tx) = &self.file_globs
            && !added_globs.is_empty()
        {
            for (glob, pattern) in report.files_added.iter().zip(added_globs) {
                if tx.send(pattern).is_ok() {
                    tracing::info!(glob, "Tailing files of a glob added by the reload.");
                    self.current.files.push(glob.clone());
                }
            }
        }
        if report.batch_changed {
            self.batch_tuning.send_replace(new.batch.clone());
            self.current.batch = new.batch.clone();
        }
        match &redactor {
            Some(r) => {
                if let Some(old) = self.redactor.load().as_deref() {
                    r.stats().carry_over(&old.stats());
                }
                self.metrics.redaction.store(Some(r.stats()));
            }
            None if self.current.redaction => {
                tracing::warn!("Redaction turned off by the reload: secrets in lines are kept.");
                self.metrics.redaction.store(None);
            }
            None => {}
        }
        self.redactor.store(redactor);
        self.current.redaction = new.redaction;
        self.current.redact = new.redact;
        Ok(report)
    }
}

/// The settings that differ between `old` and `new` and cannot change while running.
pub(crate) fn needs_restart(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.data_dir != new.data_dir, "data_dir");
    check(old.collector != new.collector, "collector");
    check(old.token != new.token, "forward.token_file/SPOOR_TOKEN");
    check(old.listen_addrs() != new.listen_addrs(), "listen");
    check(old.spill_dirs != new.spill_dirs, "spill_dirs");
    check(old.syslog != new.syslog, "syslog");
    check(old.admin != new.admin, "admin");
    check(old.max_line_bytes != new.max_line_bytes, "max_line_bytes");
    check(
        old.max_connections != new.max_connections,
        "max_connections",
    );
    check(old.buffer != new.buffer, "buffer");
    check(old.forward != new.forward, "forward");
    check(old.encryption != new.encryption, "encryption");
    keys
}

/// The globs of `new` that are not in `old`, when `new` keeps all of `old`'s (`None`
/// when one was removed: that needs a restart).
fn added_files(old: &[String], new: &[String]) -> Option<Vec<String>> {
    if !old.iter().all(|o| new.contains(o)) {
        return None;
    }
    let mut added: Vec<String> = new.iter().filter(|n| !old.contains(n)).cloned().collect();
    added.dedup();
    Some(added)
}

/// `error: cause: cause` in one line, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;
    use crate::redact::{CustomRule, Outcome};
    use spoor_sdk::event::Event;

    fn reloader(dir: &std::path::Path, source: ConfigSource) -> Reloader {
        let current = AgentConfig {
            data_dir: dir.to_path_buf(),
            ..AgentConfig::default()
        };
        let first = Arc::new(Redactor::new(&current.redact, dir).unwrap());
        let slot = RedactorSlot::default();
        slot.store(Some(first));
        Reloader {
            source: Some(source),
            current,
            redactor: slot,
            batch_tuning: watch::channel(BatchConfig::default()).0,
            file_globs: None,
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn redact(slot: &RedactorSlot, line: &str) -> String {
        let (mut event, _) = Event::from_line(line.as_bytes());
        let r = slot.load_full().unwrap();
        assert_eq!(r.apply(&mut event), Outcome::Keep);
        event.to_line()
    }

    #[tokio::test]
    async fn new_rules_apply_and_restart_only_settings_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let source: ConfigSource = Arc::new(move || {
            let mut c = AgentConfig {
                data_dir: data_dir.clone(),
                ..AgentConfig::default()
            };
            c.redact.rules.push(CustomRule {
                name: "order".into(),
                pattern: "ORD-[0-9]+".into(),
                action: crate::redact::Action::Mask,
            });
            c.batch.max_events = 7;
            c.max_connections = 9;
            Ok(c)
        });
        let mut r = reloader(dir.path(), source);
        assert_eq!(redact(&r.redactor, "msg=ORD-123"), "msg=ORD-123");
        let report = r.reload().await.unwrap();
        assert!(report.redaction_changed);
        assert!(report.batch_changed);
        assert_eq!(report.needs_restart, vec!["max_connections"]);
        assert_eq!(
            redact(&r.redactor, "msg=ORD-123"),
            "msg=[REDACTED:order] redacted=order"
        );
        // The batch limits went to the batcher; the connection limit kept its old value.
        assert_eq!(r.batch_tuning.borrow().max_events, 7);
        assert_eq!(r.current.max_connections, 1024);
    }

    #[test]
    fn only_added_globs_apply_at_run_time() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            added_files(&v(&["/a/*.log"]), &v(&["/a/*.log", "/b/*.log"])),
            Some(v(&["/b/*.log"]))
        );
        assert_eq!(added_files(&v(&["/a/*.log"]), &v(&["/b/*.log"])), None);
    }

    #[tokio::test]
    async fn new_globs_go_to_the_file_input_or_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let source: ConfigSource = Arc::new(move || {
            Ok(AgentConfig {
                data_dir: data_dir.clone(),
                files: vec!["/var/log/x/*.log".into()],
                ..AgentConfig::default()
            })
        });
        // No file input running: a restart is needed.
        let mut r = reloader(dir.path(), source.clone());
        let report = r.reload().await.unwrap();
        assert_eq!(report.needs_restart, vec!["files"]);
        assert!(r.current.files.is_empty());
        // With one: the glob is handed over.
        let mut r = reloader(dir.path(), source);
        let (tx, rx) = std::sync::mpsc::channel();
        r.file_globs = Some(tx);
        let report = r.reload().await.unwrap();
        assert!(report.needs_restart.is_empty(), "{report:?}");
        assert_eq!(report.files_added, vec!["/var/log/x/*.log".to_string()]);
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(r.current.files, vec!["/var/log/x/*.log".to_string()]);
    }

    #[tokio::test]
    async fn a_bad_configuration_keeps_the_old_rules() {
        let dir = tempfile::tempdir().unwrap();
        let source: ConfigSource = Arc::new(|| {
            Err(ConfigError::Invalid {
                key: "redact.rules",
                message: "bad pattern".into(),
            })
        });
        let mut r = reloader(dir.path(), source);
        r.reload_and_log().await;
        assert_eq!(
            r.metrics
                .config_reloads_error
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            redact(&r.redactor, "msg=\"mail bob@example.com\""),
            "msg=\"mail [REDACTED:email]\" redacted=email"
        );
    }
}
