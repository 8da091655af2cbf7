//! Cluster mode: several collectors share NATS JetStream instead of each keeping its own
//! ingest. Off unless the config has a `[cluster]` section; without it nothing here runs.
//!
//! ```text
//! agent ──HTTP──▶ any collector ──publish (Nats-Msg-Id = batch key)──▶ stream spoor-shard-<k>
//!                                                                         │ durable pull consumer
//!  lease "shard-<k>" in bucket spoor-leases ──▶ owner of k: DATA_DIR/shards/<k>/ audit chain + index
//! search ──▶ any collector ──fan-out (X-Spoor-Shard: k)──▶ owner of each shard ──▶ merged answer
//! ```
//!
//! - [`config`]: the `[cluster]` keys.
//! - [`publish`]: ingest; the agent's answer waits for JetStream's acknowledgement.
//! - [`lease`]: the lease bucket (create-if-absent, compare-and-set on the revision,
//!   which is the fencing token) and rendezvous placement of shards on live nodes.
//! - [`manager`]: the lease loop: presence, taking, renewing and handing over shards,
//!   starting and stopping ownership epochs.
//! - [`shard`]: a shard's copy on this collector and the owner loop (append, fsync, ack).
//! - [`fanout`]: reads asked of every shard owner and merged; shards that do not answer
//!   are reported, not fatal.
//! - [`dlq`]: dead letters, kept per shard copy and asked of the shard owners.
//! - [`payload`]: the message format of a batch.
//! - [`verify`]: epochs and stream positions of shard copies, for `spoor audit verify`.
//!
//! What is guaranteed, per shard: a batch acknowledged to an agent is in JetStream (on
//! `replicas` servers); every owner's copy holds each stream message once, in stream
//! order, and is acknowledged to JetStream only after its fsync; a lapsed owner stops
//! appending before anyone else may take the lease.

pub mod config;
pub mod dlq;
mod error;
pub mod fanout;
pub mod lease;
pub mod manager;
pub mod payload;
pub mod publish;
pub mod shard;
pub mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;

pub use config::ClusterConfig;
pub use error::ClusterError;
use lease::{Entry, LeaseStore};
use shard::ShardReplica;

use crate::audit::AuditOptions;
use crate::config::{CollectorConfig, IndexConfig};

/// The header that marks a read as addressed to one shard's owner (not to fan out again).
pub const SHARD_HEADER: &str = "x-spoor-shard";

/// A running cluster member.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    data_dir: PathBuf,
    audit: AuditOptions,
    index: IndexConfig,
    dlq: crate::dlq::DlqConfig,
    /// The collector's own audit log (records of dead-letter replays and discards).
    node_writer: Arc<crate::audit::AuditWriter>,
    client: async_nats::Client,
    js: jetstream::Context,
    leases: LeaseStore,
    /// The lease of each shard as last read (who to ask for it).
    view: RwLock<Vec<Option<Entry>>>,
    /// This collector's copies, opened on first ownership and kept open.
    replicas: tokio::sync::Mutex<HashMap<u32, Arc<ShardReplica>>>,
    /// The shards this collector owns right now.
    owned: RwLock<HashMap<u32, Arc<ShardReplica>>>,
    http: reqwest::Client,
    /// `Authorization` for this collector's own reads of its peers (alert rules).
    pub(crate) peer_authorization: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .field("shards", &self.config.shards)
            .finish_non_exhaustive()
    }
}

/// FNV-1a, 64 bits: stable across versions and machines (unlike `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shard of an agent: FNV-1a of its ID modulo the shard count.
pub fn shard_for(agent: &str, shards: u32) -> u32 {
    (fnv1a(agent.as_bytes()) % u64::from(shards.max(1))) as u32
}

impl Cluster {
    /// Connects to NATS, creates the shard streams and the lease bucket when absent.
    /// `node_writer` is the collector's own audit log.
    pub async fn connect(
        config: &CollectorConfig,
        node_writer: Arc<crate::audit::AuditWriter>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let Some(cc) = config.cluster.clone() else {
            return Err(ClusterError::Protocol("no [cluster] section".into()));
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("spoor-collector-{}", cc.node_id))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(cc.nats.clone())
            .await
            .map_err(|e| ClusterError::nats("connecting to NATS", e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(client.clone());
        let wait = async {
            // With retry_on_initial_connect, the client may not be connected yet.
            for _ in 0..100 {
                if client.connection_state() == async_nats::connection::State::Connected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        wait.await;
        let leases = retry("creating the lease bucket", || {
            LeaseStore::open(js.clone(), cc.replicas)
        })
        .await?;
        for shard in 0..cc.shards {
            let stream = jetstream::stream::Config {
                name: shard::stream_name(shard),
                subjects: vec![shard::stream_subject(shard)],
                num_replicas: cc.replicas,
                duplicate_window: cc.duplicate_window,
                storage: jetstream::stream::StorageType::File,
                retention: jetstream::stream::RetentionPolicy::Limits,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            };
            retry("creating a shard stream", || async {
                js.get_or_create_stream(stream.clone())
                    .await
                    .map_err(|e| ClusterError::nats("creating a shard stream", e))
            })
            .await?;
        }
        tracing::info!(node = %cc.node_id, shards = cc.shards, "Cluster mode: connected to NATS JetStream.");
        let peer_authorization = cc
            .peer_token()
            .map_err(|e| ClusterError::Protocol(e.to_string()))?
            .map(|t| format!("Bearer {t}"));
        let http = reqwest::Client::builder()
            .timeout(cc.peer_timeout)
            .build()
            .map_err(|e| ClusterError::Protocol(format!("building the peer client: {e}")))?;
        Ok(Arc::new(Cluster {
            view: RwLock::new(vec![None; cc.shards as usize]),
            config: cc,
            data_dir: config.data_dir.clone(),
            audit: config.audit_options(),
            index: config.index.clone(),
            dlq: config.dlq.clone(),
            node_writer,
            client,
            js,
            leases,
            replicas: tokio::sync::Mutex::new(HashMap::new()),
            owned: RwLock::new(HashMap::new()),
            http,
            peer_authorization,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The shard an agent's batches go to.
    pub fn shard_of(&self, agent: &str) -> u32 {
        shard_for(agent, self.config.shards)
    }

    /// This collector's copy of `shard` if it owns the shard now.
    pub fn owned(&self, shard: u32) -> Option<Arc<ShardReplica>> {
        self.owned.read().ok()?.get(&shard).cloned()
    }

    /// The dead-letter store of `shard` if this collector owns the shard now.
    pub fn owned_dlq(&self, shard: u32) -> Option<Arc<crate::dlq::Dlq>> {
        self.owned(shard)?.dlq.clone()
    }

    /// The shards this collector owns now.
    pub fn owned_shards(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .owned
            .read()
            .map(|o| o.keys().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Each shard's owner URL as last read from its lease (`None`: no live owner).
    pub fn owner_urls(&self) -> Vec<Option<String>> {
        self.view
            .read()
            .map(|v| {
                v.iter()
                    .map(|e| {
                        e.as_ref()
                            .filter(|e| !e.value.released)
                            .map(|e| e.value.url.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each shard's lease as last read.
    pub fn leases(&self) -> Vec<Option<Entry>> {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    async fn replica(&self, shard: u32) -> Result<Arc<ShardReplica>, ClusterError> {
        let mut replicas = self.replicas.lock().await;
        if let Some(r) = replicas.get(&shard) {
            return Ok(r.clone());
        }
        let r = Arc::new(
            ShardReplica::open(
                &self.data_dir,
                shard,
                self.audit.clone(),
                self.index.clone(),
                self.dlq.clone(),
                self.node_writer.clone(),
            )
            .await?,
        );
        replicas.insert(shard, r.clone());
        Ok(r)
    }

    /// Closes every shard copy (after the manager stopped all epochs).
    async fn close_replicas(&self) {
        let replicas: Vec<_> = self.replicas.lock().await.drain().collect();
        for (_, r) in replicas {
            r.shutdown().await;
        }
    }
}

/// Retries `f` for up to 30 s: JetStream answers "no leader" for a while after a
/// cluster starts.
async fn retry<T, F, Fut>(what: &'static str, mut f: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what}: retrying.");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_a_stable_hash_of_the_agent() {
        // Fixed values: changing the hash would move every agent to another stream.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let spread: std::collections::HashSet<u32> = (0..100)
            .map(|i| shard_for(&format!("agent-{i}"), 6))
            .collect();
        assert_eq!(spread.len(), 6);
        assert_eq!(shard_for("x", 1), 0);
    }
}
