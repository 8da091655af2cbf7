//! Alerts: rules on the index's counts, evaluated on an interval, notified to chat rooms.
//!
//! - [`rule`]: the typed `[alerts]` configuration;
//! - [`eval`]: measuring rules and the inactive → pending → firing → resolved machine;
//! - [`notify`]: payloads per notifier kind and delivery with retries;
//! - [`state`]: the persisted alert states and silences;
//! - `api`: what the HTTP API reads and changes (state listing, silences, test sends).
//!
//! Invariants: one evaluation at a time; the state file, with the notifications decided
//! (the outbox), is written before they are handed to delivery tasks, so a restart never
//! decides a notification twice; an outbox entry is removed once delivered or given up
//! on, and entries left by a crash are sent again at start (a crash after the receiver
//! answered but before the removal was saved can repeat that one message);
//! every phase change is appended to the audit log as a `kind=alert` line; delivery runs
//! in its own task per notification and never blocks evaluation. At shutdown the evaluator
//! stops before the audit log closes; deliveries in flight are abandoned.

mod api;
pub mod eval;
pub mod notify;
pub mod rule;
pub mod source;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use rule::{
    AlertsConfig, NotifierConfig, NotifierKind, Op, RuleConfig, RuleKind, SpikeDirection,
};
pub use source::CountSource;
pub use state::{AlertState, AlertStore, Pending, Phase, Silence};

use crate::audit::AuditWriter;
use crate::config::CollectorConfig;
use crate::error::{ConfigError, Error};
use crate::index::LogIndex;
use notify::{DeliveryMetrics, Message, RetryPolicy, Status, Target};

/// How long a resolved alert stays listed.
const RESOLVED_KEPT_MS: i64 = 3_600_000;

/// The agent name on `kind=alert` audit records.
pub const AUDIT_AGENT: &str = "spoor-alerts";

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    /// Evaluations run.
    pub evaluations: AtomicU64,
    /// Rule evaluations that failed (bad query, index error).
    pub evaluation_errors: AtomicU64,
    /// Notifications suppressed by a silence.
    pub silenced: AtomicU64,
    /// Delivery outcomes.
    pub delivery: DeliveryMetrics,
}

/// The alerting engine, shared by the evaluator task and the HTTP API.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    ruleset: RwLock<Arc<Ruleset>>,
    /// Modification time of the config file when the ruleset was read.
    source_mtime: Mutex<Option<SystemTime>>,
    store: Mutex<AlertStore>,
    path: PathBuf,
    link_base: String,
    source: CountSource,
    writer: Arc<AuditWriter>,
    http: reqwest::Client,
    metrics: AlertMetrics,
    retry: RetryPolicy,
}

/// Rules and notifiers as loaded (replaced whole on reload).
struct Ruleset {
    config: AlertsConfig,
    targets: BTreeMap<String, Target>,
}

impl Ruleset {
    fn build(config: AlertsConfig) -> Result<Ruleset, ConfigError> {
        config.validate()?;
        let mut targets = BTreeMap::new();
        for n in &config.notifiers {
            targets.insert(
                n.name.clone(),
                Target {
                    name: n.name.clone(),
                    kind: n.kind,
                    url: n.secret()?,
                },
            );
        }
        Ok(Ruleset { config, targets })
    }
}

fn mtime(path: Option<&std::path::Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}

/// What one evaluation produced.
struct Outcome {
    audit_lines: Vec<Vec<u8>>,
    deliveries: Vec<(Target, Pending)>,
}

/// The running evaluator; [`EvaluatorTask::stop`] ends it.
pub struct EvaluatorTask {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl EvaluatorTask {
    /// Stops evaluating and waits for the current evaluation to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn invalid(message: String) -> Error {
    Error::Config(ConfigError::Invalid(message))
}

impl Alerts {
    /// Loads the persisted state and prepares the notifiers.
    pub fn open(
        config: &CollectorConfig,
        index: LogIndex,
        writer: Arc<AuditWriter>,
    ) -> Result<Alerts, Error> {
        Self::open_with(config, CountSource::Index(index), writer)
    }

    /// Like [`Alerts::open`], counting on `source` (cluster mode: every shard, evaluated
    /// by the owner of shard 0 only).
    pub fn open_with(
        config: &CollectorConfig,
        source: CountSource,
        writer: Arc<AuditWriter>,
    ) -> Result<Alerts, Error> {
        let ruleset = Ruleset::build(config.alerts.clone())?;
        let alerts = &ruleset.config;
        let path = state::state_path(&config.data_dir);
        let mut store = AlertStore::load(&path).map_err(|e| invalid(e.to_string()))?;
        // Forget alerts of rules that are gone from the config.
        store
            .alerts
            .retain(|_, a| alerts.rules.iter().any(|r| r.name == a.rule));
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let link_base = alerts
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", config.listen))
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| invalid(format!("alerts: building the HTTP client: {e}")))?;
        Ok(Alerts {
            inner: Arc::new(Inner {
                source_mtime: Mutex::new(mtime(ruleset.config.source.as_deref())),
                ruleset: RwLock::new(Arc::new(ruleset)),
                store: Mutex::new(store),
                path,
                link_base,
                source,
                writer,
                http,
                metrics: AlertMetrics::default(),
                retry: RetryPolicy::default(),
            }),
        })
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &AlertMetrics {
        &self.inner.metrics
    }

    fn store(&self) -> MutexGuard<'_, AlertStore> {
        // A panic while holding the lock leaves a consistent store (every change is a
        // whole-field assignment), so a poisoned lock is still usable.
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ruleset(&self) -> Arc<Ruleset> {
        // The lock only guards an `Arc` swap, so a poisoned one still holds a whole value.
        self.inner
            .ruleset
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads `[alerts]` from the config file when its modification time changed. A file
    /// that does not load or validate keeps the current rules (and says why in the log).
    fn reload_if_changed(&self) {
        let current = self.ruleset();
        let Some(path) = current.config.source.clone() else {
            return;
        };
        let seen = mtime(Some(&path));
        {
            let mut last = self
                .inner
                .source_mtime
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if seen.is_none() || *last == seen {
                return;
            }
            *last = seen;
        }
        let loaded = crate::CollectorConfig::load(&path)
            .and_then(|c| Ruleset::build(c.alerts))
            .map(|mut r| {
                r.config.source = Some(path.clone());
                r
            });
        match loaded {
            Ok(r) => {
                self.store()
                    .alerts
                    .retain(|_, a| r.config.rules.iter().any(|rule| rule.name == a.rule));
                tracing::info!(
                    rules = r.config.rules.len(),
                    notifiers = r.targets.len(),
                    "Alert rules reloaded."
                );
                *self
                    .inner
                    .ruleset
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(r);
            }
            Err(e) => {
                self.inner
                    .metrics
                    .evaluation_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "The changed config file does not load; keeping the current alert rules.");
            }
        }
    }

    /// Starts evaluating on the configured interval, reloading the rules when the config
    /// file changes.
    pub fn spawn(&self) -> EvaluatorTask {
        let (stop, mut stopped) = watch::channel(false);
        let ruleset = self.ruleset();
        if ruleset.config.rules.is_empty() && ruleset.config.source.is_none() {
            return EvaluatorTask { stop, handle: None };
        }
        self.resume_outbox();
        let this = self.clone();
        let handle = tokio::spawn(async move {
            let mut interval = this.ruleset().config.interval;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        this.reload_if_changed();
                        this.evaluate_and_dispatch().await;
                        let now = this.ruleset().config.interval;
                        if now != interval {
                            interval = now;
                            tick = tokio::time::interval(interval);
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            tick.reset();
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        tracing::info!(
            rules = ruleset.config.rules.len(),
            interval_ms = ruleset.config.interval.as_millis() as u64,
            "Alert evaluator started."
        );
        EvaluatorTask {
            stop,
            handle: Some(handle),
        }
    }

    async fn evaluate_and_dispatch(&self) {
        let this = self.clone();
        let outcome = match tokio::task::spawn_blocking(move || this.evaluate(now_ms())).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "Alert evaluation panicked.");
                return;
            }
        };
        if !outcome.audit_lines.is_empty()
            && let Err(e) = self
                .inner
                .writer
                .append("", AUDIT_AGENT, outcome.audit_lines)
                .await
        {
            tracing::error!(error = %e, "Could not append alert state changes to the audit log.");
        }
        for (target, pending) in outcome.deliveries {
            self.dispatch(target, pending);
        }
    }

    /// Delivers one outbox entry in its own task, then removes it from the outbox.
    fn dispatch(&self, target: Target, pending: Pending) {
        let this = self.clone();
        tokio::spawn(async move {
            let i = &this.inner;
            let _ = notify::deliver(
                &i.http,
                &target,
                &pending.body,
                i.retry,
                &i.metrics.delivery,
            )
            .await;
            let done = this.clone();
            let saved = tokio::task::spawn_blocking(move || {
                let mut store = done.store();
                store.outbox.retain(|p| p.id != pending.id);
                store.save(&done.inner.path)
            })
            .await;
            if let Ok(Err(e)) = saved {
                tracing::error!(error = %e, "Could not save the alert outbox.");
            }
        });
    }

    /// Sends again what a previous run decided but did not finish delivering.
    fn resume_outbox(&self) {
        let pending: Vec<Pending> = self.store().outbox.clone();
        for p in pending {
            match self.ruleset().targets.get(&p.notifier) {
                Some(t) => {
                    tracing::info!(notifier = %p.notifier, "Resending an alert notification left by the previous run.");
                    self.dispatch(t.clone(), p);
                }
                None => self.store().outbox.retain(|q| q.id != p.id),
            }
        }
    }

    /// One evaluation at `now` (blocking: it searches the index and writes the state file).
    fn evaluate(&self, now: i64) -> Outcome {
        let i = &self.inner;
        if !i.source.evaluates_here() {
            // Cluster mode: another collector (the owner of shard 0) evaluates.
            return Outcome {
                audit_lines: Vec::new(),
                deliveries: Vec::new(),
            };
        }
        i.metrics.evaluations.fetch_add(1, Ordering::Relaxed);
        let mut store = self.store();
        store.prune_silences(now);
        let mut outcome = Outcome {
            audit_lines: Vec::new(),
            deliveries: Vec::new(),
        };
        let mut dirty = false;
        let ruleset = self.ruleset();
        for rule in &ruleset.config.rules {
            let measured = match eval::measure(&i.source, rule, now) {
                Ok(m) => m,
                Err(e) => {
                    i.metrics.evaluation_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(rule = %rule.name, error = %e, "Alert rule could not be evaluated.");
                    continue;
                }
            };
            // Groups measured now, plus groups with state (which measure 0 when absent).
            let mut groups: BTreeMap<eval::Group, f64> = store
                .alerts
                .values()
                .filter(|a| a.rule == rule.name)
                .map(|a| (a.group.clone(), 0.0))
                .collect();
            groups.extend(measured);
            for (group, value) in groups {
                let key = state::alert_key(&rule.name, &group);
                let breach = rule.breaches(value);
                let labels = labels(rule, &group);
                let silenced = store.silences.iter().any(|s| s.matches(&labels, now));
                if !store.alerts.contains_key(&key) {
                    if !breach {
                        continue;
                    }
                    let fresh = AlertState {
                        rule: rule.name.clone(),
                        group: group.clone(),
                        ..AlertState::default()
                    };
                    store.alerts.insert(key.clone(), fresh);
                }
                let Some(alert) = store.alerts.get_mut(&key) else {
                    continue;
                };
                if silenced {
                    let mut probe = alert.clone();
                    if eval::step(rule, &mut probe, breach, value, now, false)
                        .notify
                        .is_some()
                    {
                        i.metrics.silenced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let step = eval::step(rule, alert, breach, value, now, silenced);
                if step.changed_from.is_some() || step.notify.is_some() {
                    dirty = true;
                }
                let alert = alert.clone();
                if let Some(from) = step.changed_from {
                    outcome
                        .audit_lines
                        .push(audit_line(rule, &alert, from, now));
                    tracing::info!(rule = %rule.name, group = ?group, from = from.as_str(), to = alert.phase.as_str(), value, "Alert state changed.");
                }
                if let Some(status) = step.notify {
                    let msg = self.message(rule, &alert, labels, status, now);
                    for name in &rule.notify {
                        if let Some(t) = ruleset.targets.get(name) {
                            let body = notify::payload(t.kind, &msg);
                            let id = store.enqueue(name, body.clone());
                            outcome.deliveries.push((
                                t.clone(),
                                Pending {
                                    id,
                                    notifier: name.clone(),
                                    body,
                                },
                            ));
                        }
                    }
                }
            }
        }
        // Forget alerts that are over: inactive ones at once, resolved ones after an hour
        // (a resolved alert that breaches again starts afresh either way).
        let before = store.alerts.len();
        store.alerts.retain(|_, a| match a.phase {
            Phase::Inactive => false,
            Phase::Resolved => now - a.resolved_at.unwrap_or(now) < RESOLVED_KEPT_MS,
            _ => true,
        });
        dirty |= store.alerts.len() != before;
        if dirty && let Err(e) = store.save(&i.path) {
            // Without the state on disk a restart would notify again; better to skip
            // this round's notifications and retry the next evaluation.
            tracing::error!(error = %e, "Could not save alert state; holding notifications.");
            let queued: Vec<u64> = outcome.deliveries.iter().map(|(_, p)| p.id).collect();
            store.outbox.retain(|p| !queued.contains(&p.id));
            outcome.deliveries.clear();
        }
        outcome
    }

    fn message(
        &self,
        rule: &RuleConfig,
        alert: &AlertState,
        labels: BTreeMap<String, String>,
        status: Status,
        now: i64,
    ) -> Message {
        let i = &self.inner;
        let window_ms = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
        let from = now.saturating_sub(window_ms);
        let q = format!("{}{}", rule.query, eval::group_filter(&alert.group));
        let link = format!(
            "{}/?q={}&from={}&to={}",
            i.link_base,
            spoor_query::client::encode_component(q.trim()),
            spoor_query::client::encode_component(&eval::rfc3339(from)),
            spoor_query::client::encode_component(&eval::rfc3339(now.saturating_add(1000)))
        );
        let samples = match (status, rule.kind) {
            (Status::Firing, RuleKind::Absence) => Vec::new(),
            _ => eval::samples(&i.source, rule, &alert.group, now),
        };
        Message {
            status,
            rule: rule.name.clone(),
            labels,
            group: alert.group.clone(),
            value: alert.value,
            threshold: rule.threshold_text(),
            window: window_text(rule.window),
            starts_at: eval::rfc3339(alert.fired_at.or(alert.active_since).unwrap_or(now)),
            ends_at: match status {
                Status::Firing => "0001-01-01T00:00:00Z".to_string(),
                Status::Resolved => eval::rfc3339(alert.resolved_at.unwrap_or(now)),
            },
            link,
            runbook: rule.runbook.clone(),
            samples,
        }
    }
}

/// `alertname`, `severity`, the rule's labels, then the group values.
fn labels(rule: &RuleConfig, group: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = rule.labels.clone();
    if let Some(s) = &rule.severity {
        l.insert("severity".into(), s.clone());
    }
    l.extend(group.iter().map(|(k, v)| (k.clone(), v.clone())));
    l.insert("alertname".into(), rule.name.clone());
    l
}

/// One `kind=alert` audit line for a phase change.
fn audit_line(rule: &RuleConfig, a: &AlertState, from: Phase, now: i64) -> Vec<u8> {
    let mut line = String::new();
    let group: Vec<String> = a.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pairs = [
        ("ts", eval::rfc3339(now)),
        ("kind", "alert".to_string()),
        ("alert", rule.name.clone()),
        ("state", a.phase.as_str().to_string()),
        ("from_state", from.as_str().to_string()),
        ("value", format!("{}", a.value)),
        ("threshold", rule.threshold_text()),
        ("window", window_text(rule.window)),
        ("group", group.join(",")),
    ];
    for (k, v) in pairs {
        spoor_sdk::logfmt::write_pair(&mut line, k, &v);
    }
    line.into_bytes()
}

/// `5m`, `2s`, `200ms`.
fn window_text(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) && s > 0 => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) && s > 0 => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) && s > 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_print_as_written() {
        assert_eq!(window_text(Duration::from_secs(300)), "5m");
        assert_eq!(window_text(Duration::from_millis(200)), "200ms");
        assert_eq!(window_text(Duration::from_secs(2)), "2s");
        assert_eq!(
            spoor_query::client::encode_component("level:error a"),
            "level%3Aerror%20a"
        );
    }
}
