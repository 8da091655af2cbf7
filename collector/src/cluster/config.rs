//! `[cluster]`: the keys that turn a collector into one member of a fleet sharing NATS
//! JetStream. Absent, the collector runs alone (the default).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::duration_text;
use crate::error::ConfigError;

/// Cluster mode settings (`[cluster]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URL(s), e.g. `"nats://10.0.0.1:4222"` or a list of them.
    #[serde(deserialize_with = "one_or_many")]
    pub nats: Vec<String>,
    /// Number of shards (JetStream streams). Fixed for the life of the cluster.
    pub shards: u32,
    /// This collector's name in leases and audit records; unique in the cluster.
    pub node_id: String,
    /// The URL other collectors use to reach this one's HTTP API (fan-out of searches).
    pub advertise_url: String,
    /// A shard's lease lapses when its owner has not renewed it for this long
    /// (default 10 s). The owner renews every third of it.
    #[serde(default = "default_lease_ttl", with = "duration_text")]
    pub lease_ttl: Duration,
    /// Replicas of each JetStream stream (default 3; 1 is for tests).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// JetStream's duplicate window: a batch retried with the same idempotency key
    /// within it is answered as a duplicate (default 10 m).
    #[serde(default = "default_duplicate_window", with = "duration_text")]
    pub duplicate_window: Duration,
    /// How long a peer may take to answer a fanned-out read (default 10 s).
    #[serde(default = "default_peer_timeout", with = "duration_text")]
    pub peer_timeout: Duration,
    /// How long an ingest request keeps retrying a publish JetStream does not
    /// acknowledge (leader election, a node down) before answering 503 (default 15 s).
    #[serde(default = "default_publish_timeout", with = "duration_text")]
    pub publish_timeout: Duration,
    /// Environment variable holding a token with the `read` scope that this collector
    /// sends to its peers when it reads for itself (alert rules). Needed when the peers
    /// have `[[tokens]]`.
    #[serde(default)]
    pub peer_token_env: Option<String>,
    /// ... or a file holding it.
    #[serde(default)]
    pub peer_token_file: Option<std::path::PathBuf>,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_replicas() -> usize {
    3
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(600)
}
fn default_peer_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_publish_timeout() -> Duration {
    Duration::from_secs(15)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl ClusterConfig {
    /// The peer token, if one is configured (read when the collector starts).
    pub fn peer_token(&self) -> Result<Option<String>, ConfigError> {
        if self.peer_token_env.is_none() && self.peer_token_file.is_none() {
            return Ok(None);
        }
        crate::secret::Secret::from_sources(
            "cluster.peer_token",
            self.peer_token_env.as_deref(),
            self.peer_token_file.as_deref(),
            None,
        )?
        .resolve()
        .map(Some)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("cluster.{m}")));
        if self.nats.is_empty() {
            return bad("nats: name at least one NATS server URL".into());
        }
        if self.shards == 0 || self.shards > 1024 {
            return bad(format!("shards = {}: use 1 to 1024", self.shards));
        }
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return bad(format!(
                "node_id = {:?}: use 1 to 64 letters, digits, `-` or `_`",
                self.node_id
            ));
        }
        if !(self.advertise_url.starts_with("http://")
            || self.advertise_url.starts_with("https://"))
        {
            return bad(format!(
                "advertise_url = {:?}: write the http:// or https:// URL peers reach this collector at",
                self.advertise_url
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return bad("lease_ttl: at least 300ms".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas = {}: use 1 to 5", self.replicas));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::CollectorConfig;
    use std::time::Duration;

    #[test]
    fn reads_the_cluster_section_with_defaults() {
        let c = CollectorConfig::from_toml(
            r#"
            [cluster]
            nats = "nats://127.0.0.1:4222"
            shards = 6
            node_id = "c1"
            advertise_url = "http://127.0.0.1:8740"
            "#,
        )
        .expect("parses");
        let cl = c.cluster.as_ref().expect("cluster");
        assert_eq!(cl.nats, ["nats://127.0.0.1:4222"]);
        assert_eq!((cl.shards, cl.replicas), (6, 3));
        assert_eq!(cl.lease_ttl, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn refuses_bad_cluster_keys() {
        let e = CollectorConfig::from_toml(
            "[cluster]\nnats = []\nshards = 0\nnode_id = \"x\"\nadvertise_url = \"http://h\"\n",
        )
        .expect("parses")
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.nats"), "{e}");
        let e = CollectorConfig::from_toml(
            "[cluster]\nnats = [\"nats://a\"]\nshards = 2\nnode_id = \"a b\"\nadvertise_url = \"http://h\"\n",
        )
        .expect("parses")
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("node_id"), "{e}");
        let e = CollectorConfig::from_toml("[cluster]\nnats = \"x\"\nshard = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard"), "{e}");
    }
}
