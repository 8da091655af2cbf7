//! The JetStream message of one ingest batch (or of one part of a large one).
//!
//! Payload: the batch's normalised lines joined by `\n`, zstd-compressed. Headers:
//! `Nats-Msg-Id` (the idempotency key, suffixed `#<i>/<n>` for a batch split in parts
//! because it is larger than the server's `max_payload`), `Spoor-Agent`, `Spoor-Key`
//! (the idempotency key itself) and `Spoor-Encoding: zstd`.

use async_nats::HeaderMap;
use bytes::Bytes;

/// Header naming the agent.
pub const AGENT: &str = "Spoor-Agent";
/// Header holding the batch's idempotency key.
pub const KEY: &str = "Spoor-Key";
/// Header naming the payload's compression.
pub const ENCODING: &str = "Spoor-Encoding";

/// A batch as carried by one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The agent (or token name) that sent it.
    pub agent: String,
    /// Its idempotency key ("" when none).
    pub key: String,
    /// Its lines.
    pub lines: Vec<Vec<u8>>,
}

/// One message to publish.
#[derive(Debug)]
pub struct Part {
    /// `Nats-Msg-Id`, or `None` for a batch without a key (never deduplicated).
    pub msg_id: Option<String>,
    /// Headers other than the message id.
    pub headers: HeaderMap,
    /// The compressed payload.
    pub payload: Bytes,
}

/// Splits a batch into messages whose uncompressed payload stays under `max_bytes`.
pub fn encode(agent: &str, key: &str, lines: &[Vec<u8>], max_bytes: usize) -> Vec<Part> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for line in lines {
        if !current.is_empty() && current.len() + line.len() + 1 > max_bytes {
            chunks.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(b'\n');
        }
        current.extend_from_slice(line);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut headers = HeaderMap::new();
            headers.insert(AGENT, agent);
            if !key.is_empty() {
                headers.insert(KEY, key);
            }
            headers.insert(ENCODING, "zstd");
            // zstd on an in-memory buffer only fails on allocation failure.
            let payload = zstd::bulk::compress(&raw, 1).unwrap_or_else(|_| raw.clone());
            let payload = if payload.len() < raw.len() {
                payload
            } else {
                headers.insert(ENCODING, "identity");
                raw
            };
            let msg_id = match (key.is_empty(), n) {
                (true, _) => None,
                (false, 1) => Some(key.to_string()),
                (false, n) => Some(format!("{key}#{i}/{n}")),
            };
            Part {
                msg_id,
                headers,
                payload: Bytes::from(payload),
            }
        })
        .collect()
}

/// Why a message is not a spoor batch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Most bytes a message may decompress to.
const MAX_DECODED: usize = 256 * 1024 * 1024;

/// Reads a message back into its batch.
pub fn decode(payload: &[u8], headers: Option<&HeaderMap>) -> Result<Batch, DecodeError> {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let agent = header(AGENT).ok_or_else(|| DecodeError(format!("no {AGENT} header")))?;
    let key = header(KEY).unwrap_or_default();
    let raw = match header(ENCODING).as_deref() {
        Some("zstd") => zstd::bulk::decompress(payload, MAX_DECODED)
            .map_err(|e| DecodeError(format!("zstd: {e}")))?,
        Some("identity") | None => payload.to_vec(),
        Some(other) => return Err(DecodeError(format!("unknown encoding {other}"))),
    };
    let lines = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
    };
    Ok(Batch { agent, key, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_split_under_the_limit() {
        let lines: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("level=info i={i} msg=\"hello world\"").into_bytes())
            .collect();
        let parts = encode("a1", "k", &lines, 1 << 20);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].msg_id.as_deref(), Some("k"));
        let b = decode(&parts[0].payload, Some(&parts[0].headers)).expect("decodes");
        assert_eq!((b.agent.as_str(), b.key.as_str()), ("a1", "k"));
        assert_eq!(b.lines, lines);

        let parts = encode("a1", "k", &lines, 500);
        assert!(parts.len() > 3);
        assert_eq!(
            parts[1].msg_id.as_deref(),
            Some(&*format!("k#1/{}", parts.len()))
        );
        let back: Vec<Vec<u8>> = parts
            .iter()
            .flat_map(|p| decode(&p.payload, Some(&p.headers)).expect("decodes").lines)
            .collect();
        assert_eq!(back, lines);
        assert!(encode("a1", "", &lines, 1 << 20)[0].msg_id.is_none());
    }

    #[test]
    fn foreign_messages_are_refused() {
        assert!(decode(b"x", None).is_err());
        let mut h = HeaderMap::new();
        h.insert(AGENT, "a");
        h.insert(ENCODING, "br");
        assert!(decode(b"x", Some(&h)).is_err());
    }
}
