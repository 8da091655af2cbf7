//! One audit record: its byte layout in a segment, its chain hash, and parsing it back.
//!
//! The layout is described in the [module docs](super); this file is the only place that
//! reads or writes it.

use ring::digest;

/// Magic bytes at the start of every segment file (format version 1).
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"SPOORAU1";
/// Segment header: magic, then the first seq as u64 little-endian.
pub(crate) const HEADER_LEN: usize = 16;
/// Bytes of the length prefix before each record body.
pub(crate) const LEN_PREFIX: usize = 4;
/// Bytes of a SHA-256 hash.
pub(crate) const HASH_LEN: usize = 32;
/// Body bytes that do not depend on the field lengths.
const FIXED_BODY_LEN: usize = 8 + 8 + 1 + 2 + 2 + 4;
/// Longest `agent` or `batch_key`, in bytes.
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;
/// Longest `line`, in bytes.
pub const MAX_LINE_LEN: usize = 16 * 1024 * 1024;
/// Longest possible body; a length prefix above this is damage, not a record.
pub(crate) const MAX_BODY_LEN: usize = FIXED_BODY_LEN + 2 * MAX_FIELD_LEN + MAX_LINE_LEN;
/// Flag bit: this record is the last one of its batch.
pub(crate) const FLAG_BATCH_END: u8 = 1;
/// The `prev_hash` of record 0.
pub const ZERO_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// A record as stored in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log; gapless from 0.
    pub seq: u64,
    /// When the collector accepted the batch, in nanoseconds since the Unix epoch.
    pub ingest_ts_nanos: i64,
    /// The agent that sent the batch.
    pub agent: String,
    /// The batch's idempotency key ("" when it had none).
    pub batch_key: String,
    /// The logfmt line, without its trailing newline.
    pub line: Vec<u8>,
    /// True for the last record of its batch.
    pub batch_end: bool,
    /// The stored chain hash: SHA-256(previous record's hash || this record's body).
    pub hash: [u8; HASH_LEN],
}

/// Checks the field lengths against the format's limits.
pub(crate) fn check_lengths(
    agent: &str,
    batch_key: &str,
    line: &[u8],
) -> Result<(), crate::audit::AuditError> {
    let too_long = |field, len, max| crate::audit::AuditError::FieldTooLong { field, len, max };
    if agent.len() > MAX_FIELD_LEN {
        return Err(too_long("agent", agent.len(), MAX_FIELD_LEN));
    }
    if batch_key.len() > MAX_FIELD_LEN {
        return Err(too_long("batch_key", batch_key.len(), MAX_FIELD_LEN));
    }
    if line.len() > MAX_LINE_LEN {
        return Err(too_long("line", line.len(), MAX_LINE_LEN));
    }
    Ok(())
}

/// Bytes a record with these field lengths takes in a segment (prefix, body, hash).
pub(crate) fn frame_len(agent: &str, batch_key: &str, line: &[u8]) -> u64 {
    (LEN_PREFIX + FIXED_BODY_LEN + agent.len() + batch_key.len() + line.len() + HASH_LEN) as u64
}

/// The fields of a record about to be written.
pub(crate) struct RecordFields<'a> {
    pub seq: u64,
    pub ingest_ts_nanos: i64,
    pub batch_end: bool,
    pub agent: &'a str,
    pub batch_key: &'a str,
    pub line: &'a [u8],
}

/// Appends the whole frame (length prefix, canonical body, chain hash) to `out` and
/// returns the chain hash. The caller has checked the lengths with [`check_lengths`].
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    prev_hash: &[u8; HASH_LEN],
    r: &RecordFields<'_>,
) -> [u8; HASH_LEN] {
    let body_len = FIXED_BODY_LEN + r.agent.len() + r.batch_key.len() + r.line.len();
    out.reserve(LEN_PREFIX + body_len + HASH_LEN);
    // The lengths were checked against MAX_* limits, which all fit their integer types.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    let body_start = out.len();
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.ingest_ts_nanos.to_le_bytes());
    out.push(if r.batch_end { FLAG_BATCH_END } else { 0 });
    out.extend_from_slice(&(r.agent.len() as u16).to_le_bytes());
    out.extend_from_slice(r.agent.as_bytes());
    out.extend_from_slice(&(r.batch_key.len() as u16).to_le_bytes());
    out.extend_from_slice(r.batch_key.as_bytes());
    out.extend_from_slice(&(r.line.len() as u32).to_le_bytes());
    out.extend_from_slice(r.line);
    let hash = chain_hash(prev_hash, &out[body_start..]);
    out.extend_from_slice(&hash);
    hash
}

/// SHA-256(prev_hash || body): the chain rule.
pub(crate) fn chain_hash(prev_hash: &[u8; HASH_LEN], body: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(body);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The segment header for a segment whose first record is `first_seq`.
pub(crate) fn encode_header(first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Parses a segment header (at least [`HEADER_LEN`] bytes) into its first seq.
pub(crate) fn decode_header(buf: &[u8]) -> Result<u64, String> {
    if buf.len() < HEADER_LEN {
        return Err(format!("only {} of {HEADER_LEN} header bytes", buf.len()));
    }
    if &buf[..8] != SEGMENT_MAGIC {
        return Err("wrong magic bytes".to_string());
    }
    Ok(u64::from_le_bytes(le8(&buf[8..16])))
}

/// What starts at some offset of a segment.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A whole frame: its body, the stored hash and the frame's total length.
    Complete {
        body: &'a [u8],
        stored_hash: [u8; HASH_LEN],
        len: usize,
    },
    /// The bytes end before the frame does (a torn tail, or a tail still being written).
    Incomplete,
    /// The length prefix is impossible: the framing is lost from here on.
    BadLength(u32),
}

/// Splits the frame at the start of `buf`.
pub(crate) fn split_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < LEN_PREFIX {
        return Frame::Incomplete;
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let n = body_len as usize;
    if !(FIXED_BODY_LEN..=MAX_BODY_LEN).contains(&n) {
        return Frame::BadLength(body_len);
    }
    let len = LEN_PREFIX + n + HASH_LEN;
    if buf.len() < len {
        return Frame::Incomplete;
    }
    let mut stored_hash = [0u8; HASH_LEN];
    stored_hash.copy_from_slice(&buf[LEN_PREFIX + n..len]);
    Frame::Complete {
        body: &buf[LEN_PREFIX..LEN_PREFIX + n],
        stored_hash,
        len,
    }
}

/// Decodes a record body; every byte must be accounted for.
pub(crate) fn decode_body(body: &[u8], hash: [u8; HASH_LEN]) -> Result<AuditRecord, String> {
    let mut cur = Cursor { buf: body, pos: 0 };
    let seq = u64::from_le_bytes(le8(cur.take(8)?));
    let ingest_ts_nanos = i64::from_le_bytes(le8(cur.take(8)?));
    let flags = cur.take(1)?[0];
    if flags & !FLAG_BATCH_END != 0 {
        return Err(format!("unknown flag bits {flags:#04x}"));
    }
    let agent_len = cur.u16()?;
    let agent = utf8(cur.take(agent_len)?, "agent")?;
    let key_len = cur.u16()?;
    let batch_key = utf8(cur.take(key_len)?, "batch_key")?;
    let line_len = cur.u32()?;
    let line = cur.take(line_len)?.to_vec();
    if cur.pos != body.len() {
        return Err(format!(
            "{} unexpected bytes after the line",
            body.len() - cur.pos
        ));
    }
    Ok(AuditRecord {
        seq,
        ingest_ts_nanos,
        agent,
        batch_key,
        line,
        batch_end: flags & FLAG_BATCH_END != 0,
        hash,
    })
}

/// The seq of a body, without decoding the rest (bodies are at least 8 bytes long).
pub(crate) fn body_seq(body: &[u8]) -> Option<u64> {
    body.get(..8).map(|b| u64::from_le_bytes(le8(b)))
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn utf8(b: &[u8], field: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{field} is not UTF-8"))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "field of {n} bytes runs past the end of the record"
            )),
        }
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(seq: u64, agent: &str, key: &str, line: &[u8], end: bool) -> (Vec<u8>, [u8; 32]) {
        let mut out = Vec::new();
        let fields = RecordFields {
            seq,
            ingest_ts_nanos: -5,
            batch_end: end,
            agent,
            batch_key: key,
            line,
        };
        let h = encode_frame(&mut out, &ZERO_HASH, &fields);
        (out, h)
    }

    #[test]
    fn frame_round_trips_and_hash_is_the_chain_rule() {
        let (buf, h) = frame(7, "agent-1", "k", b"level=info msg=hi", true);
        assert_eq!(
            buf.len() as u64,
            frame_len("agent-1", "k", b"level=info msg=hi")
        );
        let Frame::Complete {
            body,
            stored_hash,
            len,
        } = split_frame(&buf)
        else {
            panic!("not complete")
        };
        assert_eq!(len, buf.len());
        assert_eq!(stored_hash, h);
        assert_eq!(chain_hash(&ZERO_HASH, body), h);
        let r = decode_body(body, stored_hash).unwrap();
        assert_eq!((r.seq, r.ingest_ts_nanos, r.batch_end), (7, -5, true));
        assert_eq!((r.agent.as_str(), r.batch_key.as_str()), ("agent-1", "k"));
        assert_eq!(r.line, b"level=info msg=hi");
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let (buf, _) = frame(1, "a", "b", b"c", false);
        for n in 0..buf.len() {
            assert!(
                matches!(split_frame(&buf[..n]), Frame::Incomplete),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn impossible_length_is_bad() {
        assert!(matches!(
            split_frame(&[0xff, 0xff, 0xff, 0xff, 0]),
            Frame::BadLength(_)
        ));
        assert!(matches!(split_frame(&[1, 0, 0, 0, 0]), Frame::BadLength(1)));
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(decode_header(&encode_header(42)).unwrap(), 42);
        assert!(decode_header(b"SPOORAU2\0\0\0\0\0\0\0\0").is_err());
        assert!(decode_header(b"SPOOR").is_err());
    }

    proptest! {
        #[test]
        fn any_record_round_trips(seq: u64, ts: i64, end: bool, agent in ".{0,20}", key in ".{0,20}",
                                  line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let fields = RecordFields { seq, ingest_ts_nanos: ts, batch_end: end, agent: &agent, batch_key: &key, line: &line };
            let h = encode_frame(&mut out, &ZERO_HASH, &fields);
            let Frame::Complete { body, stored_hash, .. } = split_frame(&out) else { panic!("not complete") };
            let r = decode_body(body, stored_hash).unwrap();
            prop_assert_eq!(r, AuditRecord { seq, ingest_ts_nanos: ts, agent, batch_key: key, line, batch_end: end, hash: h });
        }
    }
}
