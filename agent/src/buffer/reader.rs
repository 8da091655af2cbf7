//! Reading segments: the scan on open that finds every valid record (and where a file
//! stops being valid), and reading one record back when it is handed out.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::record::{
    FRAME_PREFIX_LEN, FrameError, FramePrefix, HEADER_LEN, HeaderError, SegmentHeader,
    check_payload,
};

/// Where one record sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub(crate) id: u64,
    /// Offset of the frame (its length field) in the file.
    pub(crate) offset: u64,
    /// Payload length from the frame.
    pub(crate) payload_len: u32,
    pub(crate) appended_at_ms: u64,
}

/// Why scanning stopped before the end of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanStop {
    Frame(FrameError),
    /// A checked record whose ID does not increase: written by something else.
    IdOutOfOrder(u64),
}

impl std::fmt::Display for ScanStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanStop::Frame(e) => e.fmt(f),
            ScanStop::IdOutOfOrder(id) => write!(f, "record id {id} out of order"),
        }
    }
}

/// What a segment file holds.
#[derive(Debug)]
pub(crate) enum Scan {
    BadHeader {
        file_len: u64,
        error: HeaderError,
    },
    Ok {
        header: SegmentHeader,
        records: Vec<RecordMeta>,
        /// End of the last valid record (or of the header).
        valid_end: u64,
        file_len: u64,
        /// Set when invalid bytes follow `valid_end`.
        stop: Option<ScanStop>,
    },
}

/// Reads a whole segment, checking every record. `after_id` is the highest record ID
/// seen in earlier segments: IDs must keep increasing.
pub(crate) fn scan_segment(path: &Path, after_id: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut head = [0u8; HEADER_LEN as usize];
    if file_len < HEADER_LEN {
        return Ok(Scan::BadHeader {
            file_len,
            error: HeaderError::TooShort,
        });
    }
    input.read_exact(&mut head)?;
    let header = match SegmentHeader::decode(&head) {
        Ok(h) => h,
        Err(error) => return Ok(Scan::BadHeader { file_len, error }),
    };
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let mut last_id = after_id.max(header.first_record_id.saturating_sub(1));
    let mut payload = Vec::new();
    let stop = loop {
        if pos == file_len {
            break None;
        }
        if file_len - pos < FRAME_PREFIX_LEN {
            break Some(ScanStop::Frame(FrameError::Truncated));
        }
        let mut prefix = [0u8; FRAME_PREFIX_LEN as usize];
        input.read_exact(&mut prefix)?;
        let prefix = match FramePrefix::decode(prefix) {
            Ok(p) => p,
            Err(e) => break Some(ScanStop::Frame(e)),
        };
        if file_len - pos - FRAME_PREFIX_LEN < u64::from(prefix.payload_len) {
            break Some(ScanStop::Frame(FrameError::Truncated));
        }
        payload.resize(prefix.payload_len as usize, 0);
        input.read_exact(&mut payload)?;
        let checked = match check_payload(prefix, &payload) {
            Ok(p) => p,
            Err(e) => break Some(ScanStop::Frame(e)),
        };
        if checked.record_id <= last_id {
            break Some(ScanStop::IdOutOfOrder(checked.record_id));
        }
        last_id = checked.record_id;
        records.push(RecordMeta {
            id: checked.record_id,
            offset: pos,
            payload_len: prefix.payload_len,
            appended_at_ms: checked.appended_at_ms,
        });
        pos += FRAME_PREFIX_LEN + u64::from(prefix.payload_len);
    };
    Ok(Scan::Ok {
        header,
        records,
        valid_end: pos,
        file_len,
        stop,
    })
}

/// Why a record could not be read back.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The bytes changed since the scan (bit rot, or another writer).
    Corrupt(String),
}

/// Reads the content (still sealed) of one record from an open segment file.
pub(crate) fn read_record(file: &mut File, meta: &RecordMeta) -> Result<Vec<u8>, ReadError> {
    file.seek(SeekFrom::Start(meta.offset))
        .map_err(ReadError::Io)?;
    let mut prefix = [0u8; FRAME_PREFIX_LEN as usize];
    file.read_exact(&mut prefix).map_err(ReadError::Io)?;
    let prefix = FramePrefix::decode(prefix).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    if prefix.payload_len != meta.payload_len {
        return Err(ReadError::Corrupt(format!(
            "length changed from {} to {}",
            meta.payload_len, prefix.payload_len
        )));
    }
    let mut payload = vec![0u8; prefix.payload_len as usize];
    file.read_exact(&mut payload).map_err(ReadError::Io)?;
    let checked = check_payload(prefix, &payload).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    if checked.record_id != meta.id {
        return Err(ReadError::Corrupt(format!(
            "expected record {} but found {}",
            meta.id, checked.record_id
        )));
    }
    let content_start = payload.len() - checked.content.len();
    payload.drain(..content_start);
    Ok(payload)
}
