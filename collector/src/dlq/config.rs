//! `[dlq]` settings: where replays go. Targets come only from here, per task name, with
//! `task = "*"` as the default; nothing in an event can name a URL the collector calls.

use std::time::Duration;

use serde::Deserialize;

use crate::config::duration_text;
use crate::error::ConfigError;
use crate::secret::Secret;

/// The dead-letter store's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Replay targets (`[[dlq.target]]`).
    #[serde(rename = "target")]
    pub targets: Vec<TargetConfig>,
}

/// Where the entries of one task (or of every task, `"*"`) are replayed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Task name, or `"*"` for the default target (the default).
    #[serde(default = "default_task")]
    pub task: String,
    /// The URL replays are sent to (`http://` or `https://`).
    pub url: String,
    /// HTTP method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers, each with its value from an environment variable, a file or inline.
    #[serde(default, rename = "header")]
    pub headers: Vec<HeaderConfig>,
    /// How long one request may take (default 30s).
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// The loop guard: an entry is sent at most this many times (default 3).
    #[serde(default = "default_max_replays")]
    pub max_replays: u32,
}

/// One extra header of a target (`[[dlq.target.header]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    /// Header name, e.g. `Authorization`.
    pub name: String,
    /// Environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// File holding the value.
    #[serde(default)]
    pub value_file: Option<std::path::PathBuf>,
    /// The value itself (fine for non-secrets).
    #[serde(default)]
    pub value: Option<String>,
}

fn default_task() -> String {
    "*".into()
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_replays() -> u32 {
    3
}

impl HeaderConfig {
    /// Where the value comes from.
    pub fn secret(&self, task: &str) -> Result<Secret, ConfigError> {
        Secret::from_sources(
            &format!("dlq.target[{task}].header.{}", self.name),
            self.value_env.as_deref(),
            self.value_file.as_deref(),
            self.value.as_deref(),
        )
    }
}

impl DlqConfig {
    /// Checks URLs, methods, the loop guard and duplicate tasks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            let what = format!("dlq.target[task = {:?}]", t.task);
            if !seen.insert(t.task.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{what}: a task has more than one target"
                )));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "{what}: url must start with http:// or https://"
                )));
            }
            if t.method.parse::<reqwest::Method>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{what}: `{}` is not an HTTP method",
                    t.method
                )));
            }
            if t.max_replays == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{what}: max_replays must be at least 1"
                )));
            }
            for h in &t.headers {
                h.secret(&t.task)?;
            }
        }
        Ok(())
    }

    /// The target for `task`: its own, else the `"*"` one.
    pub fn target_for(&self, task: &str) -> Option<&TargetConfig> {
        self.targets
            .iter()
            .find(|t| t.task == task)
            .or_else(|| self.targets.iter().find(|t| t.task == "*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_lookup() {
        let c: DlqConfig = toml::from_str(
            r#"
            [[target]]
            url = "http://127.0.0.1:9000/any"
            [[target]]
            task = "parse_email"
            url = "http://127.0.0.1:9000/tasks/parse_email"
            method = "PUT"
            timeout = "5s"
            [[target.header]]
            name = "Authorization"
            value_env = "SPOOR_TEST_REPLAY_TOKEN"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        let any = c.target_for("other").expect("default");
        assert_eq!((any.task.as_str(), any.max_replays), ("*", 3));
        assert_eq!(any.method, "POST");
        let pe = c.target_for("parse_email").expect("own");
        assert_eq!(pe.timeout, Duration::from_secs(5));
        assert_eq!(pe.headers[0].name, "Authorization");
    }

    #[test]
    fn refuses_bad_targets() {
        for bad in [
            "[[target]]\nurl = \"ftp://x\"",
            "[[target]]\nurl = \"http://x\"\nmax_replays = 0",
            "[[target]]\nurl = \"http://x\"\n[[target]]\nurl = \"http://y\"",
            "[[target]]\nurl = \"http://x\"\n[[target.header]]\nname = \"A\"",
        ] {
            let c: DlqConfig = toml::from_str(bad).expect("parses");
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<DlqConfig>("[[target]]\nurl = \"http://x\"\nurll = 1").is_err());
        assert!(DlqConfig::default().target_for("x").is_none());
    }
}
