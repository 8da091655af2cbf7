//! Shard leases and node presence in the JetStream key-value bucket `spoor-leases`.
//!
//! The bucket is an ordinary stream, `KV_spoor-leases`, created here with the stream API
//! (async-nats' `create_key_value` expects fields that nats-server 2.9 does not send). It
//! keeps one message per subject; a key `K` is the subject `$KV.spoor-leases.K`, and its
//! **revision** is the stream sequence of its last message.
//!
//! - Take a free lease: publish with `Nats-Expected-Last-Subject-Sequence: 0`
//!   (create-if-absent). Take a lapsed or released one, or renew one's own: publish with
//!   the revision last read (compare-and-set). A lost race is [`Written::Conflict`].
//! - The revision at which a collector took a lease is the **fencing token** of its
//!   ownership epoch; it is written into the shard's audit chain.
//! - Expiry is judged by the observer's own clock: a lease whose revision has not changed
//!   for `lease_ttl` has lapsed. No clocks are compared across machines.
//! - Presence: each collector rewrites `node.<id>` every tick; a node whose key has not
//!   changed for `lease_ttl` is gone. Live nodes share shards by rendezvous hashing
//!   ([`preferred_owner`]).

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ClusterError;

/// The bucket's name, as async-nats and the `nats` CLI see it.
pub const BUCKET: &str = "spoor-leases";
/// The stream behind the bucket.
pub const BUCKET_STREAM: &str = "KV_spoor-leases";

/// What a shard lease (or a presence key) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The owning collector's `node_id`.
    pub owner: String,
    /// Its HTTP API, for fanned-out reads.
    pub url: String,
    /// Set by an owner that handed the shard over on purpose: take it without waiting.
    #[serde(default)]
    pub released: bool,
    /// The owner's committed audit head for this shard at its last renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<ShardHead>,
}

/// A position in one collector's copy of a shard's audit chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHead {
    /// The seq of the next record (the number of records).
    pub next_seq: u64,
    /// The chain hash of the last record, hex.
    pub hash: String,
    /// The last stream sequence in the chain.
    pub stream_seq: u64,
}

/// A key's current message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream sequence of the message: the key's revision.
    pub revision: u64,
    /// Its value.
    pub value: LeaseValue,
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the new revision.
    Ok(u64),
    /// The key was not at the expected revision.
    Conflict,
}

/// Reads and writes the bucket.
#[derive(Clone)]
pub struct LeaseStore {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
}

fn subject(key: &str) -> String {
    format!("$KV.{BUCKET}.{key}")
}

/// The lease key of a shard.
pub fn shard_key(shard: u32) -> String {
    format!("shard-{shard}")
}

/// The presence key of a node.
pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

impl LeaseStore {
    /// Opens the bucket's stream, creating it when absent.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Self, ClusterError> {
        let config = jetstream::stream::Config {
            name: BUCKET_STREAM.to_string(),
            subjects: vec![format!("$KV.{BUCKET}.>")],
            max_messages_per_subject: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| ClusterError::nats("creating the lease bucket", e))?;
        Ok(Self { js, stream })
    }

    /// The current message of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self
            .stream
            .get_last_raw_message_by_subject(&subject(key))
            .await
        {
            Ok(m) => {
                let value = serde_json::from_slice(&m.payload).map_err(|e| {
                    ClusterError::Protocol(format!("lease {key} holds no lease value: {e}"))
                })?;
                Ok(Some(Entry {
                    revision: m.sequence,
                    value,
                }))
            }
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(ClusterError::nats("reading a lease", e)),
        }
    }

    /// Writes `value` if `key` is at `expected` (0: if the key has no message).
    pub async fn put_if(
        &self,
        key: &str,
        value: &LeaseValue,
        expected: u64,
        timeout: Duration,
    ) -> Result<Written, ClusterError> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| ClusterError::Protocol(format!("encoding a lease: {e}")))?;
        let publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .expected_last_subject_sequence(expected);
        self.publish(key, publish, timeout).await
    }

    /// Writes `value` unconditionally (presence).
    pub async fn put(
        &self,
        key: &str,
        value: &LeaseValue,
        timeout: Duration,
    ) -> Result<u64, ClusterError> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| ClusterError::Protocol(format!("encoding a lease: {e}")))?;
        match self
            .publish(
                key,
                PublishMessage::build().payload(Bytes::from(payload)),
                timeout,
            )
            .await?
        {
            Written::Ok(rev) => Ok(rev),
            Written::Conflict => Err(ClusterError::Protocol(
                "an unconditional write conflicted".into(),
            )),
        }
    }

    async fn publish(
        &self,
        key: &str,
        publish: PublishMessage,
        timeout: Duration,
    ) -> Result<Written, ClusterError> {
        let ack = async {
            let fut = self.js.send_publish(subject(key), publish).await?;
            fut.await
        };
        match tokio::time::timeout(timeout, ack).await {
            Err(_) => Err(ClusterError::Timeout("writing a lease")),
            Ok(Ok(ack)) => Ok(Written::Ok(ack.sequence)),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Written::Conflict),
            Ok(Err(e)) => Err(ClusterError::nats("writing a lease", e)),
        }
    }

    /// The node ids with a presence key.
    pub async fn node_ids(&self) -> Result<Vec<String>, ClusterError> {
        let prefix = subject("node.");
        let mut info = self
            .stream
            .info_with_subjects(format!("{prefix}*"))
            .await
            .map_err(|e| ClusterError::nats("listing nodes", e))?;
        let mut out = Vec::new();
        use futures_util::StreamExt;
        while let Some(item) = info.next().await {
            let (subject, _count) = item.map_err(|e| ClusterError::nats("listing nodes", e))?;
            if let Some(id) = subject.strip_prefix(&prefix) {
                out.push(id.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The live node that should own `shard`: highest rendezvous score wins, so adding or
/// removing a node moves only the shards it wins or held.
pub fn preferred_owner(nodes: &[String], shard: u32) -> Option<&str> {
    nodes
        .iter()
        .max_by_key(|n| (score(n, shard), n.as_str()))
        .map(String::as_str)
}

fn score(node: &str, shard: u32) -> u64 {
    let mut h = super::fnv1a(node.as_bytes());
    for b in shard.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalise (splitmix64) so that close inputs spread.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rendezvous_spreads_shards_and_moves_few() {
        let three = nodes(&["c1", "c2", "c3"]);
        let mut counts = std::collections::HashMap::new();
        for shard in 0..60 {
            *counts
                .entry(preferred_owner(&three, shard).expect("owner"))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&c| c >= 10), "{counts:?}");
        // Removing c3 moves only c3's shards.
        let two = nodes(&["c1", "c2"]);
        for shard in 0..60 {
            let before = preferred_owner(&three, shard).expect("owner");
            let after = preferred_owner(&two, shard).expect("owner");
            if before != "c3" {
                assert_eq!(before, after, "shard {shard}");
            }
        }
        assert_eq!(preferred_owner(&[], 0), None);
    }

    #[test]
    fn lease_values_round_trip_as_json() {
        let v = LeaseValue {
            owner: "c1".into(),
            url: "http://127.0.0.1:1".into(),
            released: false,
            head: Some(ShardHead {
                next_seq: 5,
                hash: "ab".into(),
                stream_seq: 4,
            }),
        };
        let text = serde_json::to_string(&v).expect("json");
        assert_eq!(
            serde_json::from_str::<LeaseValue>(&text).expect("parses"),
            v
        );
        let old: LeaseValue =
            serde_json::from_str(r#"{"owner":"c2","url":"http://h"}"#).expect("parses");
        assert!(!old.released && old.head.is_none());
    }
}
