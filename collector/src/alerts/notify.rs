//! Notifications: one message per alert and state change, rendered into each notifier's
//! payload (Slack, Mattermost, Discord, Teams, Alertmanager-style webhook) and delivered
//! in its own task with retries and backoff that honours `429 Retry-After`.
//!
//! Webhook URLs are secrets: they are resolved at delivery time and never logged; logs and
//! errors name the notifier instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::rule::NotifierKind;
use crate::secret::Secret;

/// Discord's message limit.
pub const DISCORD_LIMIT: usize = 2000;
/// Slack's limit for a section block's text.
const SLACK_SECTION_LIMIT: usize = 3000;
/// Mattermost's post limit.
const MATTERMOST_LIMIT: usize = 16_383;
/// Kept well below Teams' 28 KB card limit.
const TEAMS_TEXT_LIMIT: usize = 12_000;
/// Longest sample line shown.
const SAMPLE_LIMIT: usize = 300;

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The alert fires (first time or repeated).
    Firing,
    /// The alert stopped firing.
    Resolved,
}

impl Status {
    /// `firing` / `resolved`, as Alertmanager writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Everything a notification says about one alert.
#[derive(Debug, Clone)]
pub struct Message {
    /// Firing or resolved.
    pub status: Status,
    /// The rule's name.
    pub rule: String,
    /// `alertname`, `severity`, the rule's labels and the `group_by` values.
    pub labels: BTreeMap<String, String>,
    /// The `group_by` values alone.
    pub group: BTreeMap<String, String>,
    /// Measured value.
    pub value: f64,
    /// `> 10`, `no matches`...
    pub threshold: String,
    /// The rule's window, as written (`5m`).
    pub window: String,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339, or Alertmanager's zero time while firing.
    pub ends_at: String,
    /// Link to the UI search showing the lines.
    pub link: String,
    /// Runbook link.
    pub runbook: Option<String>,
    /// Up to 5 matching lines (already redacted by the agent).
    pub samples: Vec<String>,
}

impl Message {
    /// A stable identifier of the alert (its labels).
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.labels {
            for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }

    /// Alertmanager's group key, `{}:{alertname="x", task="y"}`.
    pub fn group_key(&self) -> String {
        let mut out = String::from("{}:{");
        let mut first = true;
        let alertname = std::iter::once(("alertname", self.rule.as_str()));
        for (k, v) in alertname.chain(self.group.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            if !first {
                out.push_str(", ");
            }
            first = false;
            let _ = write!(out, "{k}={v:?}");
        }
        out.push('}');
        out
    }

    /// `charge-errors (task=charge)`.
    pub fn title(&self) -> String {
        let status = match self.status {
            Status::Firing => "FIRING",
            Status::Resolved => "RESOLVED",
        };
        let mut t = format!("[{status}] {}", self.rule);
        if !self.group.is_empty() {
            let groups: Vec<String> = self.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(t, " ({})", groups.join(", "));
        }
        t
    }

    /// `value 12 (threshold > 10) in the last 5m`.
    pub fn summary(&self) -> String {
        let now = match self.status {
            Status::Firing => "",
            Status::Resolved => "now ",
        };
        format!(
            "{now}value {} (threshold {}) in the last {}",
            number(self.value),
            self.threshold,
            self.window
        )
    }

    /// The whole message as Markdown text, cut to `limit` characters.
    pub fn markdown(&self, limit: usize) -> String {
        let mut head = format!("**{}**\n{}\n", self.title(), self.summary());
        if let Some(s) = self.labels.get("severity") {
            let _ = writeln!(head, "Severity: {s}");
        }
        if let Some(r) = &self.runbook {
            let _ = writeln!(head, "Runbook: {r}");
        }
        let _ = writeln!(head, "Search: {}", self.link);
        let samples = self.sample_block();
        let budget = limit.saturating_sub(char_len(&head));
        if samples.is_empty() || budget < 20 {
            return truncate(&head, limit);
        }
        let mut out = head;
        out.push_str(&truncate_block(&samples, budget));
        out
    }

    fn sample_block(&self) -> String {
        if self.samples.is_empty() {
            return String::new();
        }
        let mut s = String::from("```\n");
        for line in &self.samples {
            s.push_str(&truncate(&line.replace("```", "'''"), SAMPLE_LIMIT));
            s.push('\n');
        }
        s.push_str("```\n");
        s
    }
}

/// Cuts a fenced code block to `limit` characters, keeping the closing fence.
fn truncate_block(block: &str, limit: usize) -> String {
    if char_len(block) <= limit {
        return block.to_string();
    }
    let mut cut = truncate(block, limit.saturating_sub(5));
    cut.push_str("\n```\n");
    cut
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Cuts `s` to at most `limit` characters, ending with `…` when cut.
pub fn truncate(s: &str, limit: usize) -> String {
    if char_len(s) <= limit {
        return s.to_string();
    }
    let mut out: String = s.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// The JSON body a notifier of `kind` receives for `msg`.
pub fn payload(kind: NotifierKind, msg: &Message) -> Value {
    match kind {
        NotifierKind::Slack => {
            let text = msg.markdown(SLACK_SECTION_LIMIT).replace("**", "*");
            json!({
                "text": truncate(&format!("{}: {}", msg.title(), msg.summary()), SLACK_SECTION_LIMIT),
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                    { "type": "actions", "elements": [
                        { "type": "button", "text": { "type": "plain_text", "text": "Show lines" }, "url": msg.link }
                    ] }
                ]
            })
        }
        NotifierKind::Mattermost => json!({ "text": msg.markdown(MATTERMOST_LIMIT) }),
        NotifierKind::Discord => json!({ "content": msg.markdown(DISCORD_LIMIT) }),
        NotifierKind::Teams => teams(msg),
        NotifierKind::Webhook => webhook(msg),
    }
}

fn teams(msg: &Message) -> Value {
    let mut facts = vec![
        json!({ "title": "Value", "value": number(msg.value) }),
        json!({ "title": "Threshold", "value": msg.threshold }),
        json!({ "title": "Window", "value": msg.window }),
    ];
    for (k, v) in &msg.labels {
        facts.push(json!({ "title": k, "value": v }));
    }
    let mut body = vec![
        json!({ "type": "TextBlock", "text": msg.title(), "weight": "Bolder", "size": "Medium", "wrap": true,
                "color": if msg.status == Status::Firing { "Attention" } else { "Good" } }),
        json!({ "type": "TextBlock", "text": msg.summary(), "wrap": true }),
        json!({ "type": "FactSet", "facts": facts }),
    ];
    if !msg.samples.is_empty() {
        let samples: Vec<String> = msg
            .samples
            .iter()
            .map(|s| truncate(s, SAMPLE_LIMIT))
            .collect();
        body.push(
            json!({ "type": "TextBlock", "text": truncate(&samples.join("\n"), TEAMS_TEXT_LIMIT),
                          "fontType": "Monospace", "wrap": true, "size": "Small" }),
        );
    }
    let mut actions =
        vec![json!({ "type": "Action.OpenUrl", "title": "Show lines", "url": msg.link })];
    if let Some(r) = &msg.runbook {
        actions.push(json!({ "type": "Action.OpenUrl", "title": "Runbook", "url": r }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions
            }
        }]
    })
}

fn webhook(msg: &Message) -> Value {
    let mut annotations = BTreeMap::from([
        (
            "summary".to_string(),
            format!("{}: {}", msg.title(), msg.summary()),
        ),
        ("value".to_string(), number(msg.value)),
        ("threshold".to_string(), msg.threshold.clone()),
        ("window".to_string(), msg.window.clone()),
        ("samples".to_string(), msg.samples.join("\n")),
    ]);
    if let Some(r) = &msg.runbook {
        annotations.insert("runbook_url".into(), r.clone());
    }
    let group_labels: BTreeMap<&str, &str> = std::iter::once(("alertname", msg.rule.as_str()))
        .chain(msg.group.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    json!({
        "version": "4",
        "groupKey": msg.group_key(),
        "truncatedAlerts": 0,
        "status": msg.status.as_str(),
        "receiver": "",
        "groupLabels": group_labels,
        "commonLabels": msg.labels,
        "commonAnnotations": annotations,
        "externalURL": msg.link.split("/?").next().unwrap_or_default(),
        "alerts": [{
            "status": msg.status.as_str(),
            "labels": msg.labels,
            "annotations": annotations,
            "startsAt": msg.starts_at,
            "endsAt": msg.ends_at,
            "generatorURL": msg.link,
            "fingerprint": msg.fingerprint()
        }]
    })
}

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Notifications given up on.
    pub failed: AtomicU64,
    /// Attempts retried (errors, 5xx, 429).
    pub retries: AtomicU64,
}

/// A notifier ready to deliver.
#[derive(Debug, Clone)]
pub struct Target {
    /// The notifier's name (what logs show).
    pub name: String,
    /// Payload shape.
    pub kind: NotifierKind,
    /// The URL, resolved at delivery.
    pub url: Secret,
}

/// How delivery retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub attempts: u32,
    /// First backoff; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait, including a `Retry-After`.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Why a delivery failed for good.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL could not be read.
    #[error("notifier {name}: {message}")]
    Url {
        /// Notifier name.
        name: String,
        /// Why (never the URL).
        message: String,
    },
    /// The receiver refused it or never answered.
    #[error("notifier {name}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Notifier name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// The last status or error (without the URL).
        last: String,
    },
}

/// Sends `body` to `target`, retrying on connection errors, 408, 429 and 5xx. Returns the
/// final HTTP status.
pub async fn deliver(
    http: &reqwest::Client,
    target: &Target,
    body: &Value,
    policy: RetryPolicy,
    metrics: &DeliveryMetrics,
) -> Result<u16, DeliveryError> {
    let result = attempt_all(http, target, body, policy, metrics).await;
    match &result {
        Ok(status) => {
            metrics.sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(notifier = %target.name, status, "Alert notification delivered.");
        }
        Err(e) => {
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(notifier = %target.name, error = %e, "Alert notification failed.");
        }
    }
    result
}

async fn attempt_all(
    http: &reqwest::Client,
    target: &Target,
    body: &Value,
    policy: RetryPolicy,
    metrics: &DeliveryMetrics,
) -> Result<u16, DeliveryError> {
    let url = target.url.resolve().map_err(|e| DeliveryError::Url {
        name: target.name.clone(),
        message: e.to_string(),
    })?;
    let bytes = serde_json::to_vec(body).map_err(|e| DeliveryError::Url {
        name: target.name.clone(),
        message: e.to_string(),
    })?;
    let mut backoff = policy.first_backoff;
    let mut last = String::new();
    for attempt in 1..=policy.attempts.max(1) {
        let sent = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes.clone())
            .send()
            .await;
        let wait = match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Ok(status.as_u16());
                }
                last = format!("HTTP {}", status.as_u16());
                let retryable =
                    status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error();
                if !retryable {
                    break;
                }
                retry_after(resp.headers()).unwrap_or(backoff)
            }
            Err(e) => {
                last = e.without_url().to_string();
                backoff
            }
        };
        if attempt == policy.attempts {
            break;
        }
        metrics.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(notifier = %target.name, attempt, last = %last, wait_ms = wait.as_millis() as u64, "Retrying alert notification.");
        tokio::time::sleep(wait.min(policy.max_wait)).await;
        backoff = (backoff * 2).min(policy.max_wait);
    }
    Err(DeliveryError::GaveUp {
        name: target.name.clone(),
        attempts: policy.attempts,
        last,
    })
}

/// `Retry-After`, in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    spoor_sdk::retry::parse_retry_after(text, time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(samples: usize) -> Message {
        Message {
            status: Status::Firing,
            rule: "charge-errors".into(),
            labels: BTreeMap::from([
                ("alertname".into(), "charge-errors".into()),
                ("task".into(), "charge".into()),
            ]),
            group: BTreeMap::from([("task".into(), "charge".into())]),
            value: 12.0,
            threshold: "> 10".into(),
            window: "5m".into(),
            starts_at: "2026-11-30T03:00:00Z".into(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            link: "http://127.0.0.1:8740/?q=level%3Aerror".into(),
            runbook: Some("https://wiki/charge".into()),
            samples: (0..samples)
                .map(|i| format!("level=error msg=\"{}\"", "x".repeat(i * 200)))
                .collect(),
        }
    }

    #[test]
    fn discord_respects_its_limit() {
        let m = message(5);
        let p = payload(NotifierKind::Discord, &m);
        let content = p["content"].as_str().expect("content");
        assert!(
            content.chars().count() <= DISCORD_LIMIT,
            "{}",
            content.len()
        );
        assert!(content.contains("charge-errors") && content.contains("> 10"));
        assert!(content.ends_with("```\n"), "{content}");
    }

    #[test]
    fn webhook_is_alertmanager_v4() {
        let p = payload(NotifierKind::Webhook, &message(1));
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(
            p["groupKey"],
            "{}:{alertname=\"charge-errors\", task=\"charge\"}"
        );
        assert_eq!(p["commonLabels"]["task"], "charge");
        assert_eq!(
            p["alerts"][0]["fingerprint"].as_str().map(str::len),
            Some(16)
        );
        assert_eq!(
            p["alerts"][0]["annotations"]["runbook_url"],
            "https://wiki/charge"
        );
    }

    #[test]
    fn teams_is_a_workflows_envelope() {
        let p = payload(NotifierKind::Teams, &message(2));
        assert_eq!(p["type"], "message");
        let a = &p["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(
            a["content"]["actions"][0]["url"],
            "http://127.0.0.1:8740/?q=level%3Aerror"
        );
    }

    #[test]
    fn slack_has_text_and_blocks() {
        let p = payload(NotifierKind::Slack, &message(0));
        assert!(p["text"].as_str().is_some_and(|t| t.contains("FIRING")));
        assert_eq!(p["blocks"][0]["text"]["type"], "mrkdwn");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
