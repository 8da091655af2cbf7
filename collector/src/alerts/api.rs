//! What the HTTP API asks of the engine: the rules with their state, silences, and a test
//! notification.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::notify::{self, Message, Status};
use super::state::{Phase, Silence};
use super::{Alerts, eval, labels, now_ms, window_text};

impl Alerts {
    /// Rules with their alerts, and the active silences (`GET /api/v1/alerts`).
    pub fn snapshot(&self) -> Value {
        let now = now_ms();
        let ruleset = self.ruleset();
        let store = self.store();
        let rules: Vec<Value> = ruleset
            .config
            .rules
            .iter()
            .map(|r| {
                let alerts: Vec<Value> = store
                    .alerts
                    .values()
                    .filter(|a| a.rule == r.name)
                    .map(|a| {
                        json!({
                            "labels": labels(r, &a.group),
                            "group": a.group,
                            "state": a.phase.as_str(),
                            "value": a.value,
                            "active_since": a.active_since.map(eval::rfc3339),
                            "fired_at": a.fired_at.map(eval::rfc3339),
                            "resolved_at": a.resolved_at.map(eval::rfc3339),
                            "notified_at": a.notified_at.map(eval::rfc3339),
                        })
                    })
                    .collect();
                let worst = store
                    .alerts
                    .values()
                    .filter(|a| a.rule == r.name)
                    .map(|a| a.phase)
                    .max_by_key(|p| match p {
                        Phase::Firing => 3,
                        Phase::Pending => 2,
                        Phase::Resolved => 1,
                        Phase::Inactive => 0,
                    })
                    .unwrap_or(Phase::Inactive);
                json!({
                    "name": r.name,
                    "kind": r.kind,
                    "query": r.query,
                    "of": r.of,
                    "window": window_text(r.window),
                    "op": r.op.as_str(),
                    "value": r.value,
                    "threshold": r.threshold_text(),
                    "group_by": r.group_by,
                    "severity": r.severity,
                    "notify": r.notify,
                    "state": worst.as_str(),
                    "alerts": alerts,
                })
            })
            .collect();
        let silences: Vec<Value> = store
            .silences
            .iter()
            .filter(|s| s.expires_at > now)
            .map(silence_json)
            .collect();
        json!({ "rules": rules, "silences": silences, "undelivered": store.outbox.len() })
    }

    /// Adds a silence and persists it.
    pub fn add_silence(
        &self,
        matchers: BTreeMap<String, String>,
        duration: Duration,
        comment: String,
        created_by: String,
    ) -> Result<Value, String> {
        if matchers.is_empty() {
            return Err("a silence needs at least one matcher (for example alertname)".into());
        }
        let now = now_ms();
        let expires_at =
            now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        let silence = Silence {
            id: format!(
                "{now:x}-{:x}",
                self.inner.metrics.evaluations.load(Ordering::Relaxed)
            ),
            matchers,
            expires_at,
            comment,
            created_by,
        };
        let mut store = self.store();
        store.prune_silences(now);
        store.silences.push(silence.clone());
        store.save(&self.inner.path).map_err(|e| {
            store.silences.pop();
            format!("saving the silence: {e}")
        })?;
        tracing::info!(id = %silence.id, matchers = ?silence.matchers, "Silence added.");
        Ok(silence_json(&silence))
    }

    /// Ends the silence `id` now and persists that; `Ok(None)` when no active silence has
    /// that id. Returns the silence as it is now (expired).
    pub fn expire_silence(&self, id: &str) -> Result<Option<Value>, String> {
        let now = now_ms();
        let mut store = self.store();
        let Some(pos) = store
            .silences
            .iter()
            .position(|s| s.id == id && s.expires_at > now)
        else {
            return Ok(None);
        };
        let before = store.silences[pos].expires_at;
        store.silences[pos].expires_at = now;
        let expired = store.silences[pos].clone();
        store.save(&self.inner.path).map_err(|e| {
            store.silences[pos].expires_at = before;
            format!("saving the silence: {e}")
        })?;
        tracing::info!(id = %expired.id, "Silence expired.");
        Ok(Some(silence_json(&expired)))
    }

    /// Sends a sample notification to one notifier and waits for the outcome.
    pub async fn test_notifier(&self, name: &str) -> Result<u16, String> {
        let i = &self.inner;
        let ruleset = self.ruleset();
        let target = ruleset
            .targets
            .get(name)
            .ok_or_else(|| format!("no notifier is named `{name}`"))?;
        let now = now_ms();
        let msg = Message {
            status: Status::Firing,
            rule: "spoor-test".into(),
            labels: BTreeMap::from([
                ("alertname".into(), "spoor-test".into()),
                ("severity".into(), "info".into()),
            ]),
            group: BTreeMap::new(),
            value: 1.0,
            threshold: "> 0".into(),
            window: "1m".into(),
            starts_at: eval::rfc3339(now),
            ends_at: "0001-01-01T00:00:00Z".into(),
            link: format!("{}/", i.link_base),
            runbook: None,
            samples: vec!["level=info msg=\"test notification from spoor alerts test\"".into()],
        };
        let body = notify::payload(target.kind, &msg);
        notify::deliver(&i.http, target, &body, i.retry, &i.metrics.delivery)
            .await
            .map_err(|e| e.to_string())
    }
}

fn silence_json(s: &Silence) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers,
        "expires_at": eval::rfc3339(s.expires_at),
        "comment": s.comment,
        "created_by": s.created_by,
    })
}
