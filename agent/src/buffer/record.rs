//! Segment headers and record framing: the only code that knows the byte layout
//! (documented in the module docs of [`buffer`](super)).

use super::crypto::CipherParams;

/// First bytes of every segment file.
pub(crate) const MAGIC: &[u8; 8] = b"SPOORBUF";
/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Size of the segment header.
pub(crate) const HEADER_LEN: u64 = 64;
/// Header flag bit 0: record contents are sealed by a cipher.
pub(crate) const FLAG_ENCRYPTED: u16 = 1;
/// Length (u32) + CRC32 (u32) before each payload.
pub(crate) const FRAME_PREFIX_LEN: u64 = 8;
/// Record ID (u64) + append time (u64) at the start of each payload.
pub(crate) const PAYLOAD_PREFIX_LEN: u32 = 16;
/// Largest payload accepted when reading; anything larger is a corrupt length.
pub(crate) const MAX_PAYLOAD_LEN: u32 = 1 << 30;

/// The fixed header at the start of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) cipher: CipherParams,
    /// The record ID the segment's first record has (or will have).
    pub(crate) first_record_id: u64,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    TooShort,
    BadMagic,
    BadChecksum,
    /// Written by another format version or with unknown flags: never touch such a file.
    Unsupported {
        version: u16,
        flags: u16,
    },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort => f.write_str("header is truncated"),
            HeaderError::BadMagic => f.write_str("bad magic"),
            HeaderError::BadChecksum => f.write_str("header checksum mismatch"),
            HeaderError::Unsupported { version, flags } => {
                write!(f, "unsupported version {version} or flags {flags:#06x}")
            }
        }
    }
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.cipher.encrypted {
            FLAG_ENCRYPTED
        } else {
            0
        };
        out[10..12].copy_from_slice(&flags.to_le_bytes());
        out[12..28].copy_from_slice(&self.cipher.key_id);
        out[28..40].copy_from_slice(&self.cipher.nonce_prefix);
        out[40..48].copy_from_slice(&self.first_record_id.to_le_bytes());
        // 48..60 reserved, zero.
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let Some(h) = bytes.get(..HEADER_LEN as usize) else {
            return Err(HeaderError::TooShort);
        };
        if &h[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32fast::hash(&h[0..60]) != u32::from_le_bytes(arr(&h[60..64])) {
            return Err(HeaderError::BadChecksum);
        }
        let version = u16::from_le_bytes(arr(&h[8..10]));
        let flags = u16::from_le_bytes(arr(&h[10..12]));
        if version != FORMAT_VERSION || flags & !FLAG_ENCRYPTED != 0 {
            return Err(HeaderError::Unsupported { version, flags });
        }
        Ok(SegmentHeader {
            cipher: CipherParams {
                encrypted: flags & FLAG_ENCRYPTED != 0,
                key_id: arr(&h[12..28]),
                nonce_prefix: arr(&h[28..40]),
            },
            first_record_id: u64::from_le_bytes(arr(&h[40..48])),
        })
    }
}

/// Copies a slice of known length into an array. Callers slice with constant ranges of
/// exactly `N` bytes, so the fallback (zeros) is unreachable.
fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if s.len() == N {
        out.copy_from_slice(s);
    }
    out
}

/// Frames one record: length, CRC32 of the payload, payload (ID, append time, content).
pub(crate) fn encode_frame(record_id: u64, appended_at_ms: u64, content: &[u8]) -> Vec<u8> {
    let payload_len = PAYLOAD_PREFIX_LEN as usize + content.len();
    let mut out = Vec::with_capacity(FRAME_PREFIX_LEN as usize + payload_len);
    // Lengths above u32::MAX are rejected by the writer before framing (RecordTooLarge);
    // saturating here keeps such a frame invalid rather than wrapping.
    out.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record_id.to_le_bytes());
    out.extend_from_slice(&appended_at_ms.to_le_bytes());
    out.extend_from_slice(content);
    let crc = crc32fast::hash(&out[FRAME_PREFIX_LEN as usize..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Size of the frame for `content_len` content bytes.
pub(crate) fn frame_len(content_len: usize) -> u64 {
    FRAME_PREFIX_LEN + u64::from(PAYLOAD_PREFIX_LEN) + content_len as u64
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The file ends inside the frame (a torn write).
    Truncated,
    /// The length field is impossible.
    BadLength(u32),
    /// The payload does not match its CRC.
    BadChecksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("record is truncated"),
            FrameError::BadLength(len) => write!(f, "impossible record length {len}"),
            FrameError::BadChecksum => f.write_str("record checksum mismatch"),
        }
    }
}

/// The two fields before a payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FramePrefix {
    pub(crate) payload_len: u32,
    pub(crate) crc: u32,
}

impl FramePrefix {
    pub(crate) fn decode(bytes: [u8; FRAME_PREFIX_LEN as usize]) -> Result<Self, FrameError> {
        let payload_len = u32::from_le_bytes(arr(&bytes[0..4]));
        if !(PAYLOAD_PREFIX_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
            return Err(FrameError::BadLength(payload_len));
        }
        Ok(FramePrefix {
            payload_len,
            crc: u32::from_le_bytes(arr(&bytes[4..8])),
        })
    }
}

/// A checked payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload<'a> {
    pub(crate) record_id: u64,
    pub(crate) appended_at_ms: u64,
    pub(crate) content: &'a [u8],
}

/// Checks a payload against the CRC from its prefix and splits it.
pub(crate) fn check_payload(
    prefix: FramePrefix,
    payload: &[u8],
) -> Result<Payload<'_>, FrameError> {
    if payload.len() != prefix.payload_len as usize {
        return Err(FrameError::Truncated);
    }
    if crc32fast::hash(payload) != prefix.crc {
        return Err(FrameError::BadChecksum);
    }
    Ok(Payload {
        record_id: u64::from_le_bytes(arr(&payload[0..8])),
        appended_at_ms: u64::from_le_bytes(arr(&payload[8..16])),
        content: &payload[PAYLOAD_PREFIX_LEN as usize..],
    })
}

#[cfg(test)]
/// Decodes the frame at the start of `buf`, returning the payload and the frame's size.
pub(crate) fn decode_frame(buf: &[u8]) -> Result<(Payload<'_>, usize), FrameError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_LEN as usize) else {
        return Err(FrameError::Truncated);
    };
    let prefix = FramePrefix::decode(arr(prefix))?;
    let end = FRAME_PREFIX_LEN as usize + prefix.payload_len as usize;
    let Some(payload) = buf.get(FRAME_PREFIX_LEN as usize..end) else {
        return Err(FrameError::Truncated);
    };
    Ok((check_payload(prefix, payload)?, end))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_layout() {
        let header = SegmentHeader {
            cipher: CipherParams {
                encrypted: true,
                key_id: [7; 16],
                nonce_prefix: [9; 12],
            },
            first_record_id: 42,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], b"SPOORBUF");
        assert_eq!(&bytes[8..12], &[1, 0, 1, 0]);
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        assert_eq!(
            SegmentHeader::decode(&bytes[..63]),
            Err(HeaderError::TooShort)
        );
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn unknown_version_is_unsupported_not_corrupt() {
        let mut bytes = SegmentHeader {
            cipher: CipherParams::default(),
            first_record_id: 1,
        }
        .encode();
        bytes[8] = 2;
        let crc = crc32fast::hash(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err(HeaderError::Unsupported {
                version: 2,
                flags: 0
            })
        );
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        let mut frame = encode_frame(1, 2, b"x");
        frame[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode_frame(&frame), Err(FrameError::BadLength(3)));
        frame[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_frame(&frame), Err(FrameError::BadLength(u32::MAX)));
    }

    proptest! {
        #[test]
        fn frame_round_trip(id in any::<u64>(), ts in any::<u64>(), content in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let frame = encode_frame(id, ts, &content);
            prop_assert_eq!(frame.len() as u64, frame_len(content.len()));
            let (payload, used) = decode_frame(&frame).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(payload, Payload { record_id: id, appended_at_ms: ts, content: &content });
        }

        #[test]
        fn every_truncation_is_detected(content in proptest::collection::vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>()) {
            let frame = encode_frame(5, 6, &content);
            let cut = cut.index(frame.len());
            prop_assert!(decode_frame(&frame[..cut]).is_err());
        }

        #[test]
        fn every_bit_flip_is_detected(content in proptest::collection::vec(any::<u8>(), 0..256), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut frame = encode_frame(5, 6, &content);
            let at = at.index(frame.len());
            frame[at] ^= 1 << bit;
            // A flip in the length field may turn into Truncated or BadLength; a flip
            // anywhere else is a checksum mismatch. CRC32 catches every single-bit error.
            prop_assert!(decode_frame(&frame).is_err());
        }
    }
}
