//! The ingest side of cluster mode: an accepted HTTP batch becomes one message (or a few,
//! when larger than the server's `max_payload`) on its shard's stream, and the agent is
//! answered only after JetStream acknowledged every part (stored on its replicas).
//!
//! The shard is a hash of the agent ID, so one agent's batches stay in order on one
//! stream. The batch's idempotency key is the `Nats-Msg-Id`; JetStream answers a repeat
//! within the stream's duplicate window as a duplicate, and so does the collector.
//! Publishes are retried with the same id until `publish_timeout` (a stream leader
//! election, a NATS node down), which the duplicate window makes safe.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;

use super::error::ClusterError;
use super::shard::stream_subject;
use super::{Cluster, payload};

/// What JetStream made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The shard it went to.
    pub shard: u32,
    /// The stream seq of its (last) message.
    pub stream_seq: u64,
    /// Every part was already in the stream.
    pub duplicate: bool,
    /// Messages it took.
    pub parts: usize,
}

/// Room left in a message for headers and the compression frame.
const HEADROOM: usize = 16 * 1024;

impl Cluster {
    /// Publishes one batch and waits for JetStream's acknowledgement of every part.
    pub async fn publish(
        &self,
        agent: &str,
        key: &str,
        lines: &[Vec<u8>],
    ) -> Result<Published, ClusterError> {
        let shard = self.shard_of(agent);
        let subject = stream_subject(shard);
        let max = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(HEADROOM)
            .max(4096);
        let parts = payload::encode(agent, key, lines, max);
        let n = parts.len();
        let deadline = Instant::now() + self.config.publish_timeout;
        let mut duplicate = true;
        let mut stream_seq = 0;
        for part in parts {
            let mut message = PublishMessage::build()
                .payload(part.payload)
                .headers(part.headers);
            if let Some(id) = &part.msg_id {
                message = message.message_id(id);
            }
            let mut backoff = Duration::from_millis(50);
            let ack = loop {
                let attempt = async {
                    let fut = self
                        .js
                        .send_publish(subject.clone(), message.clone())
                        .await?;
                    fut.await
                };
                match attempt.await {
                    Ok(ack) => break ack,
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        return Err(ClusterError::nats("publishing a batch", e));
                    }
                    Err(e) => {
                        if Instant::now() + backoff > deadline {
                            return Err(ClusterError::nats("publishing a batch", e));
                        }
                        tracing::debug!(shard, error = %e, "Publish not acknowledged; retrying.");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            };
            duplicate &= ack.duplicate;
            stream_seq = ack.sequence;
        }
        Ok(Published {
            shard,
            stream_seq,
            duplicate: duplicate && n > 0,
            parts: n,
        })
    }
}
