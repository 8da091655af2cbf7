//! Turning an ingest body into audit-log lines: decompression, line splitting, and the
//! normalisation DESIGN.md requires (no line dropped; invalid UTF-8 and oversized lines kept
//! and flagged).
//!
//! A well-formed line is stored byte for byte as the agent sent it. Only a line that must be
//! changed (too long, not UTF-8) is re-encoded through the lenient reader so that its flags
//! (`truncated=true`, `invalid_utf8=true`) are part of what the audit log keeps.

use std::io::Read;

use spoor_sdk::logfmt::{ReadOptions, read_line};

/// How the body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression (`identity` or no header).
    Identity,
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
}

/// Why a body was refused as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// `Content-Encoding` names something we do not read.
    #[error("unsupported Content-Encoding `{0}` (use zstd, gzip or identity)")]
    UnsupportedEncoding(String),
    /// The compressed stream is broken.
    #[error("the body is not valid {encoding} data: {source}")]
    BadCompression {
        /// Which encoding.
        encoding: &'static str,
        /// The decoder's complaint.
        #[source]
        source: std::io::Error,
    },
    /// Decompressed, it is larger than allowed.
    #[error("the decompressed body is larger than {limit} bytes; send smaller batches")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

impl Encoding {
    /// Reads a `Content-Encoding` header value.
    pub fn from_header(value: Option<&str>) -> Result<Self, BodyError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
            Some("zstd") => Ok(Encoding::Zstd),
            Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
        }
    }
}

/// Decompresses `body`, refusing more than `limit` bytes of output (a zip bomb stops there).
pub fn decode_body(body: &[u8], encoding: Encoding, limit: usize) -> Result<Vec<u8>, BodyError> {
    let (reader, name): (Box<dyn Read + '_>, &'static str) = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            return Ok(body.to_vec());
        }
        Encoding::Gzip => (Box::new(flate2::read::MultiGzDecoder::new(body)), "gzip"),
        Encoding::Zstd => match zstd::stream::read::Decoder::new(body) {
            Ok(d) => (Box::new(d), "zstd"),
            Err(source) => {
                return Err(BodyError::BadCompression {
                    encoding: "zstd",
                    source,
                });
            }
        },
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| BodyError::BadCompression {
            encoding: name,
            source,
        })?;
    if read > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

/// Splits a body into the lines to append. Empty lines (blank separators, the final
/// newline) are skipped; every other line is kept, normalised when it must be.
pub fn split_lines(body: &[u8], max_line_bytes: usize) -> Vec<Vec<u8>> {
    let options = ReadOptions { max_line_bytes };
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
        .map(|line| {
            if line.len() <= max_line_bytes && std::str::from_utf8(line).is_ok() {
                line.to_vec()
            } else {
                read_line(line, &options).0.to_line().into_bytes()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_are_kept_and_flagged_not_dropped() {
        let body = b"a=1\r\nplain text\n\n  \nbad=\xff\nlong=xxxxxxxxxxxxxxxxxxxx\n";
        let lines = split_lines(body, 16);
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into())
            .collect();
        assert_eq!(
            text,
            [
                "a=1",
                "plain text",
                "bad=\u{fffd} invalid_utf8=true",
                "long=xxxxxxxxxxx truncated=true",
            ]
        );
    }

    #[test]
    fn decompresses_and_limits() {
        let data = b"a=1\nb=2\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            decode_body(&gz, Encoding::Gzip, 1 << 20).expect("gzip decodes"),
            data
        );
        let zs = zstd::encode_all(&data[..], 1).expect("zstd");
        assert_eq!(
            decode_body(&zs, Encoding::Zstd, 1 << 20).expect("zstd decodes"),
            data
        );
        assert!(matches!(
            decode_body(&zs, Encoding::Zstd, 100),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_body(b"not zstd", Encoding::Zstd, 100),
            Err(BodyError::BadCompression { .. })
        ));
        assert!(Encoding::from_header(Some("br")).is_err());
    }
}
