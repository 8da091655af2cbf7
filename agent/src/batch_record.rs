//! What a disk-buffer record holds: one batch of lines, compressed.
//!
//! ```text
//! [\0spoor-positions [...]\n]              file read positions (plain, see inputs::positions)
//! \0spoor-zstd lane=L events=E bytes=B\n    this header
//! zstd(lines)                              the batch's lines, each ending in \n
//! ```
//!
//! The batcher compresses each batch once, before the buffer seals it, so the cipher and the
//! disk see a fifth of the bytes and the forwarder sends the record's body as it is (with
//! `compression = "zstd"`, the default) instead of compressing it again on every attempt.
//! Records written before this format (plain lines after the optional positions header),
//! and the agent's own drop reports, are read as plain lines.

use crate::inputs::positions::split_header;

const PREFIX: &[u8] = b"\0spoor-zstd ";

/// zstd level of the records (and of what is sent): the forwarder's long-standing default.
const LEVEL: i32 = 3;

/// Thread-local zstd contexts: making one per batch costs a few hundred KiB of allocation.
mod contexts {
    use std::cell::RefCell;

    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }

    pub(super) fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
        COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let c = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(zstd::bulk::Compressor::new(level)?),
            };
            c.compress(data)
        })
    }

    pub(super) fn decompress(data: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
        DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = match slot.as_mut() {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new()?),
            };
            d.decompress(data, len)
        })
    }
}

/// zstd at the records' level, for bodies the forwarder compresses itself.
pub(crate) fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    contexts::compress(data, LEVEL)
}

/// The record content for `lines` (`events` of them, in `lane`), after `header` (the
/// positions header, or empty).
pub(crate) fn encode(
    header: Vec<u8>,
    lane: usize,
    events: usize,
    lines: &[u8],
) -> std::io::Result<Vec<u8>> {
    let body = compress(lines)?;
    let mut out = header;
    out.reserve(body.len() + 64);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(
        format!("lane={lane} events={events} bytes={}\n", lines.len()).as_bytes(),
    );
    out.extend_from_slice(&body);
    Ok(out)
}

/// A record's batch, without its positions header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Batch<'a> {
    /// zstd-compressed lines.
    Zstd {
        lane: usize,
        events: u64,
        /// Length of the lines uncompressed.
        bytes: usize,
        body: &'a [u8],
    },
    /// Plain lines (older records, drop reports).
    Plain(&'a [u8]),
    /// A zstd header this version cannot read.
    Unreadable,
}

/// Reads a record's content (see the module docs).
pub(crate) fn decode(content: &[u8]) -> Batch<'_> {
    let (_, rest) = split_header(content);
    let Some(after) = rest.strip_prefix(PREFIX) else {
        // Any other header line (they start with NUL) never leaves this host.
        if rest.starts_with(b"\0") {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            return Batch::Plain(&rest[end..]);
        }
        return Batch::Plain(rest);
    };
    let Some(end) = after.iter().position(|&b| b == b'\n') else {
        return Batch::Unreadable;
    };
    let fields = std::str::from_utf8(&after[..end]).unwrap_or_default();
    let field = |name: &str| {
        fields
            .split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("lane"), field("events"), field("bytes")) {
        (Some(lane), Some(events), Some(bytes)) => Batch::Zstd {
            lane: lane as usize,
            events,
            bytes: bytes as usize,
            body: &after[end + 1..],
        },
        _ => Batch::Unreadable,
    }
}

impl Batch<'_> {
    /// The lines, uncompressed.
    pub(crate) fn lines(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Batch::Zstd { bytes, body, .. } => contexts::decompress(body, *bytes),
            Batch::Plain(lines) => Ok(lines.to_vec()),
            Batch::Unreadable => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a compressed batch whose header cannot be read",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::positions::encode_header;

    #[test]
    fn a_batch_round_trips_with_and_without_positions() {
        let lines = b"msg=a n=1\nmsg=b n=2\n".repeat(50);
        for header in [Vec::new(), encode_header(&[])] {
            let content = encode(header, 7, 100, &lines).unwrap();
            let batch = decode(&content);
            let Batch::Zstd {
                lane,
                events,
                bytes,
                body,
            } = batch
            else {
                panic!("not read as zstd: {batch:?}");
            };
            assert_eq!((lane, events, bytes), (7, 100, lines.len()));
            assert!(body.len() < lines.len() / 4, "compressed: {}", body.len());
            assert_eq!(decode(&content).lines().unwrap(), lines);
        }
    }

    #[test]
    fn older_plain_records_are_read_as_lines() {
        assert_eq!(decode(b"msg=a\n"), Batch::Plain(b"msg=a\n"));
        let mut with_positions = encode_header(&[]);
        with_positions.extend_from_slice(b"msg=b\n");
        assert_eq!(decode(&with_positions).lines().unwrap(), b"msg=b\n");
        // Unknown headers stay on this host; a damaged batch header is an error.
        assert_eq!(decode(b"\0junk\nmsg=y\n"), Batch::Plain(b"msg=y\n"));
        assert_eq!(decode(b"\0spoor-zstd lane=x\nrest"), Batch::Unreadable);
        assert!(Batch::Unreadable.lines().is_err());
    }
}
