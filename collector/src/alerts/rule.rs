//! Alert configuration as users write it (`[alerts]`, `[[alerts.notifier]]`,
//! `[[alerts.rule]]`), typed and checked once when the config loads.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::duration_text;
use crate::error::ConfigError;
use crate::secret::Secret;

/// The `[alerts]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often rules are evaluated (default 15 s).
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Base URL of the UI for links in messages (default `http://LISTEN`).
    pub public_url: Option<String>,
    /// Where notifications go.
    #[serde(rename = "notifier")]
    pub notifiers: Vec<NotifierConfig>,
    /// What to watch.
    #[serde(rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// The file these settings came from; the evaluator reloads `[alerts]` from it when it
    /// changes. Set by [`crate::CollectorConfig::load`], never read from TOML.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            public_url: None,
            notifiers: Vec::new(),
            rules: Vec::new(),
            source: None,
        }
    }
}

/// A chat room or endpoint that receives notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// The name rules refer to in `notify`, and the one logs use (never the URL).
    pub name: String,
    /// The payload shape.
    pub kind: NotifierKind,
    /// Environment variable holding the webhook URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the webhook URL.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The URL itself (discouraged: webhook URLs are secrets).
    #[serde(default)]
    pub url: Option<String>,
}

impl NotifierConfig {
    /// Where the webhook URL comes from.
    pub fn secret(&self) -> Result<Secret, ConfigError> {
        Secret::from_sources(
            &format!("alerts.notifier.{}", self.name),
            self.url_env.as_deref(),
            self.url_file.as_deref(),
            self.url.as_deref(),
        )
    }
}

/// Payload shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// `{"text", "blocks"}`.
    Slack,
    /// `{"text"}`.
    Mattermost,
    /// `{"content"}`, at most 2,000 characters.
    Discord,
    /// A Workflows envelope around an Adaptive Card.
    Teams,
    /// Alertmanager's version 4 webhook document.
    Webhook,
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Count of `query` in `window`, compared with `value`.
    Threshold,
    /// Count of `query` divided by count of `of`, compared with `value`.
    Ratio,
    /// How many times the count in `window` changed against the window before (in the
    /// `direction` asked for), compared with `value` (the factor).
    Spike,
    /// No match of `query` in `window`.
    Absence,
}

/// Comparison of the measured value with `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    /// Above.
    #[serde(rename = ">")]
    Gt,
    /// At or above.
    #[serde(rename = ">=")]
    Ge,
    /// Below.
    #[serde(rename = "<")]
    Lt,
    /// At or below.
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// Whether `measured op threshold` holds.
    pub fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => measured > threshold,
            Op::Ge => measured >= threshold,
            Op::Lt => measured < threshold,
            Op::Le => measured <= threshold,
        }
    }

    /// As written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// One `[[alerts.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; the `alertname` label.
    pub name: String,
    /// What is measured.
    pub kind: RuleKind,
    /// The query whose matches are counted (the numerator for `ratio`).
    pub query: String,
    /// The denominator query of a `ratio` rule.
    #[serde(default)]
    pub of: Option<String>,
    /// How far back each evaluation counts.
    #[serde(with = "duration_text")]
    pub window: Duration,
    /// Comparison (default `>`; ignored by `absence`).
    #[serde(default = "default_op")]
    pub op: Op,
    /// Threshold (default 0; ignored by `absence`).
    #[serde(default)]
    pub value: f64,
    /// How long the condition must hold before the alert fires (default 0).
    #[serde(rename = "for", default, deserialize_with = "duration_or_zero")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after the condition clears (default 0).
    #[serde(default, deserialize_with = "duration_or_zero")]
    pub keep_firing_for: Duration,
    /// Fields that split the rule into one alert per value combination.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Extra labels on every alert of this rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `severity` label (for example `critical`, `warning`).
    #[serde(default)]
    pub severity: Option<String>,
    /// Link to what to do.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Names of the notifiers to tell.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Notify again this often while firing (default: never).
    #[serde(default, deserialize_with = "optional_duration")]
    pub repeat_interval: Option<Duration>,
    /// Tell the notifiers when the alert resolves (default true).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// For `spike`: watch for a rise (`up`, the default), a fall (`down`) or either (`both`).
    #[serde(default)]
    pub direction: SpikeDirection,
}

/// Which change a `spike` rule watches for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpikeDirection {
    /// The count rose: current / previous.
    #[default]
    Up,
    /// The count fell: previous / current.
    Down,
    /// Either: the larger of the two factors.
    Both,
}

impl SpikeDirection {
    /// The change factor of a spike rule from the counts of the current and the previous
    /// window (a window with no match counts as 1, so a factor is always finite).
    pub fn factor(self, current: f64, previous: f64) -> f64 {
        let up = current / previous.max(1.0);
        let down = previous / current.max(1.0);
        match self {
            SpikeDirection::Up => up,
            SpikeDirection::Down => down,
            SpikeDirection::Both => up.max(down),
        }
    }
}

fn default_op() -> Op {
    Op::Gt
}

fn yes() -> bool {
    true
}

fn duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_text::deserialize(d)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_text::deserialize(d).map(Some)
}

impl RuleConfig {
    /// Whether a measured value is a breach.
    pub fn breaches(&self, measured: f64) -> bool {
        match self.kind {
            RuleKind::Absence => measured <= 0.0,
            _ => self.op.holds(measured, self.value),
        }
    }

    /// "> 10" or "= 0" as shown in messages.
    pub fn threshold_text(&self) -> String {
        match self.kind {
            RuleKind::Absence => "no matches".to_string(),
            _ => format!("{} {}", self.op.as_str(), self.value),
        }
    }
}

impl AlertsConfig {
    /// Checks what types cannot: unique names, known notifiers, `of` for ratios,
    /// field names in `group_by`, and that the queries parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_millis(10) {
            return Err(invalid("alerts.interval must be at least 10ms"));
        }
        let mut names = HashSet::new();
        for n in &self.notifiers {
            if !names.insert(n.name.as_str()) {
                return Err(invalid(format!(
                    "alerts.notifier.{}: the name is used twice",
                    n.name
                )));
            }
            n.secret()?;
        }
        let mut rules = HashSet::new();
        for r in &self.rules {
            let key = |k: &str| format!("alerts.rule.{}.{k}", r.name);
            if !rules.insert(r.name.as_str()) {
                return Err(invalid(format!(
                    "alerts.rule.{}: the name is used twice",
                    r.name
                )));
            }
            if r.window.is_zero() {
                return Err(invalid(format!("{} must be above 0", key("window"))));
            }
            match (r.kind, &r.of) {
                (RuleKind::Ratio, None) => {
                    return Err(invalid(format!(
                        "{} is required for kind = \"ratio\"",
                        key("of")
                    )));
                }
                (RuleKind::Ratio, Some(_)) => {}
                (_, Some(_)) => {
                    return Err(invalid(format!(
                        "{} is only for kind = \"ratio\"",
                        key("of")
                    )));
                }
                _ => {}
            }
            if r.kind == RuleKind::Absence && !r.group_by.is_empty() {
                return Err(invalid(format!(
                    "{}: an absence rule cannot be grouped (a group with no matches has no \
                     name); write one rule per task instead",
                    key("group_by")
                )));
            }
            for f in &r.group_by {
                if f.is_empty() || f.contains(|c: char| c.is_whitespace() || c == ',' || c == '|') {
                    return Err(invalid(format!(
                        "{}: `{f}` is not a field name",
                        key("group_by")
                    )));
                }
            }
            for q in std::iter::once(&r.query).chain(r.of.iter()) {
                if q.contains('|') {
                    return Err(invalid(format!(
                        "{}: pipeline stages are not allowed in alert queries (use group_by)",
                        key("query")
                    )));
                }
                spoor_query::parse_query(q)
                    .map_err(|e| invalid(format!("{}: {e}", key("query"))))?;
            }
            for n in &r.notify {
                if !names.contains(n.as_str()) {
                    return Err(invalid(format!(
                        "{}: no [[alerts.notifier]] is named `{n}`",
                        key("notify")
                    )));
                }
            }
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        let c: AlertsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn reads_a_rule_with_defaults() {
        let c = parse(
            r#"
            interval = "200ms"
            [[notifier]]
            name = "ops"
            kind = "discord"
            url = "http://127.0.0.1:1/x"
            [[rule]]
            name = "errs"
            kind = "threshold"
            query = "level:error"
            window = "2s"
            value = 3
            notify = ["ops"]
            "#,
        )
        .expect("parses");
        assert_eq!(c.interval, Duration::from_millis(200));
        let r = &c.rules[0];
        assert_eq!(r.op, Op::Gt);
        assert!(r.send_resolved);
        assert_eq!(r.for_, Duration::ZERO);
        assert_eq!(r.repeat_interval, None);
        assert!(r.breaches(4.0) && !r.breaches(3.0));
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[[notifier]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://x\"\n";
        let e = parse(&format!(
            "{base}[[rule]]\nname = \"r\"\nkind = \"ratio\"\nquery = \"a\"\nwindow = \"1m\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("alerts.rule.r.of"), "{e}");
        let e = parse(&format!(
            "{base}[[rule]]\nname = \"r\"\nkind = \"threshold\"\nquery = \"a\"\nwindow = \"1m\"\nnotify = [\"nope\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("alerts.rule.r.notify") && e.contains("nope"),
            "{e}"
        );
        let e =
            parse("[[notifier]]\nname = \"ops\"\nkind = \"telegram\"\nurl = \"x\"\n").unwrap_err();
        assert!(e.contains("telegram"), "{e}");
        let e = parse(&format!(
            "{base}[[rule]]\nname = \"r\"\nkind = \"threshold\"\nquery = \"a\"\nwindow = \"soon\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse(&format!(
            "{base}[[rule]]\nname = \"r\"\nkind = \"threshold\"\nquery = \"a\"\nwindow = \"1m\"\nop = \"!=\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("!="), "{e}");
    }
}

#[cfg(test)]
mod spike_tests {
    use super::SpikeDirection;

    #[test]
    fn spike_factors_by_direction() {
        assert_eq!(SpikeDirection::Up.factor(30.0, 10.0), 3.0);
        assert_eq!(SpikeDirection::Up.factor(5.0, 10.0), 0.5);
        assert_eq!(SpikeDirection::Down.factor(5.0, 10.0), 2.0);
        assert_eq!(SpikeDirection::Down.factor(0.0, 10.0), 10.0);
        assert_eq!(SpikeDirection::Both.factor(30.0, 10.0), 3.0);
        assert_eq!(SpikeDirection::Both.factor(2.0, 10.0), 5.0);
        // A window without matches counts as one, so the factor stays finite.
        assert_eq!(SpikeDirection::Up.factor(7.0, 0.0), 7.0);
    }
}
