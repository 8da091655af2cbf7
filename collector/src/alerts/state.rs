//! What the evaluator remembers between runs, in `DATA_DIR/alerts/state.json`: each alert's
//! phase and when it was last notified, and the silences. The file is replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory), and it is written before
//! the notifications of an evaluation go out, so a restart never repeats them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// Firing.
    Firing,
    /// Was firing; the condition cleared.
    Resolved,
}

impl Phase {
    /// As written in the audit log and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
}

/// One alert: a rule and one combination of its `group_by` values. Times are Unix
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlertState {
    /// The rule's name.
    pub rule: String,
    /// The `group_by` values of this alert.
    pub group: BTreeMap<String, String>,
    /// Current phase.
    pub phase: Phase,
    /// Last measured value.
    pub value: f64,
    /// When the condition started holding (pending or firing).
    pub active_since: Option<i64>,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// Last evaluation at which the condition held.
    pub last_breach: Option<i64>,
    /// When it resolved.
    pub resolved_at: Option<i64>,
    /// When notifiers were last told it fires (None: not yet in this firing episode,
    /// for example because it was silenced).
    pub notified_at: Option<i64>,
}

/// A silence: alerts whose labels include all `matchers` are not notified until
/// `expires_at` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Identifier.
    pub id: String,
    /// Label values to match; `alertname` is the rule's name.
    pub matchers: BTreeMap<String, String>,
    /// When it stops applying.
    pub expires_at: i64,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who set it (the token's name).
    #[serde(default)]
    pub created_by: String,
}

impl Silence {
    /// Whether it silences an alert with these labels at `now`.
    pub fn matches(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        now < self.expires_at
            && self
                .matchers
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// Everything persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertStore {
    /// Alerts by key (see [`alert_key`]).
    pub alerts: BTreeMap<String, AlertState>,
    /// Silences, expired ones are dropped on save.
    pub silences: Vec<Silence>,
    /// Notifications decided but not yet delivered (or given up on): sent again after a
    /// restart, so a crash between deciding and delivering loses nothing.
    #[serde(default)]
    pub outbox: Vec<Pending>,
    /// The id of the next outbox entry.
    #[serde(default)]
    pub next_id: u64,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Identifier within the store.
    pub id: u64,
    /// The notifier's name.
    pub notifier: String,
    /// The payload.
    pub body: serde_json::Value,
}

/// The key of one alert in the store.
pub fn alert_key(rule: &str, group: &BTreeMap<String, String>) -> String {
    let mut key = rule.to_string();
    for (k, v) in group {
        key.push('\u{1f}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Reading or writing the state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the JSON we wrote.
    #[error("{path}: not an alert state file: {message}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// The state file's path under a data directory.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("alerts").join("state.json")
}

impl AlertStore {
    /// Loads the store; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<AlertStore, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AlertStore::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Queues a notification; returns its id.
    pub fn enqueue(&mut self, notifier: &str, body: serde_json::Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.outbox.push(Pending {
            id,
            notifier: notifier.to_string(),
            body,
        });
        id
    }

    /// Drops silences that expired before `now`.
    pub fn prune_silences(&mut self, now: i64) {
        self.silences.retain(|s| s.expires_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = state_path(dir.path());
        assert!(
            AlertStore::load(&path)
                .expect("missing is empty")
                .alerts
                .is_empty()
        );
        let mut store = AlertStore::default();
        let group = BTreeMap::from([("task".to_string(), "charge".to_string())]);
        store.alerts.insert(
            alert_key("errs", &group),
            AlertState {
                rule: "errs".into(),
                group,
                phase: Phase::Firing,
                notified_at: Some(5),
                ..AlertState::default()
            },
        );
        store.save(&path).expect("save");
        let back = AlertStore::load(&path).expect("load");
        assert_eq!(back.alerts, store.alerts);
    }

    #[test]
    fn silences_match_all_matchers_until_they_expire() {
        let s = Silence {
            id: "1".into(),
            matchers: BTreeMap::from([("alertname".into(), "errs".into())]),
            expires_at: 100,
            comment: String::new(),
            created_by: String::new(),
        };
        let labels = BTreeMap::from([
            ("alertname".to_string(), "errs".to_string()),
            ("task".to_string(), "x".to_string()),
        ]);
        assert!(s.matches(&labels, 99));
        assert!(!s.matches(&labels, 100));
        assert!(!s.matches(&BTreeMap::new(), 0));
    }
}
