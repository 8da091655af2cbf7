//! Splits a byte stream into lines with a size limit. A line longer than `max` bytes is
//! handed on with its first `max + 1` bytes (so the decoder sees it is too long, cuts it to
//! `max` and flags it `truncated=true`); the rest up to its newline is discarded and counted.
//! `\r` before `\n` is left for the decoder to strip. Offsets reported with each line let
//! the file input know exactly how far the stream was consumed.

/// Line splitter state between reads.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max: usize,
    partial: Vec<u8>,
    skipping: bool,
    /// Bytes discarded from over-long lines since the last [`LineSplitter::take_discarded`].
    discarded: u64,
}

impl LineSplitter {
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            max: max_line_bytes,
            partial: Vec::new(),
            skipping: false,
            discarded: 0,
        }
    }

    fn keep(&self) -> usize {
        self.max.saturating_add(1)
    }

    /// Feeds `data`; calls `emit(line, end)` for every complete line, where `end` is the
    /// index in `data` just past its newline.
    pub(crate) fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&[u8], usize)) {
        let mut pos = 0;
        while pos < data.len() {
            let Some(i) = data[pos..].iter().position(|&b| b == b'\n') else {
                self.append(&data[pos..]);
                break;
            };
            let chunk = &data[pos..pos + i];
            let end = pos + i + 1;
            if self.partial.is_empty() && !self.skipping {
                let keep = chunk.len().min(self.keep());
                self.discarded += (chunk.len() - keep) as u64;
                emit(&chunk[..keep], end);
            } else {
                self.append(chunk);
                let line = std::mem::take(&mut self.partial);
                self.skipping = false;
                emit(&line, end);
            }
            pos = end;
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.skipping {
            self.discarded += bytes.len() as u64;
            return;
        }
        let room = self.keep() - self.partial.len();
        let take = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..take]);
        if bytes.len() > room {
            self.discarded += (bytes.len() - room) as u64;
            self.skipping = true;
        }
    }

    /// Whether bytes of an unfinished line are waiting.
    pub(crate) fn has_partial(&self) -> bool {
        !self.partial.is_empty() || self.skipping
    }

    /// Ends the unfinished line (EOF or timeout), returning it if there is one.
    pub(crate) fn take_partial(&mut self) -> Option<Vec<u8>> {
        let had = self.has_partial();
        self.skipping = false;
        had.then(|| std::mem::take(&mut self.partial))
    }

    /// Bytes discarded from over-long lines since the last call.
    pub(crate) fn take_discarded(&mut self) -> u64 {
        std::mem::take(&mut self.discarded)
    }

    /// Forgets any unfinished line (the file was truncated).
    pub(crate) fn reset(&mut self) {
        self.partial.clear();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines with their end offsets, bytes discarded, and the unfinished rest.
    type Split = (Vec<(Vec<u8>, usize)>, u64, Option<Vec<u8>>);

    fn split(max: usize, chunks: &[&[u8]]) -> Split {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut base = 0;
        for c in chunks {
            s.feed(c, |line, end| out.push((line.to_vec(), base + end)));
            base += c.len();
        }
        let discarded = s.take_discarded();
        (out, discarded, s.take_partial())
    }

    #[test]
    fn splits_across_chunks_with_offsets() {
        let (lines, discarded, rest) = split(100, &[b"ab\ncd", b"e\r\n", b"\nf"]);
        assert_eq!(
            lines,
            vec![
                (b"ab".to_vec(), 3),
                (b"cde\r".to_vec(), 8),
                (b"".to_vec(), 9)
            ]
        );
        assert_eq!(discarded, 0);
        assert_eq!(rest, Some(b"f".to_vec()));
    }

    #[test]
    fn long_lines_keep_max_plus_one_and_count_the_rest() {
        let (lines, discarded, rest) = split(4, &[b"0123456789\nok\n"]);
        assert_eq!(lines, vec![(b"01234".to_vec(), 11), (b"ok".to_vec(), 14)]);
        assert_eq!(discarded, 5);
        assert_eq!(rest, None);
        let (lines, discarded, _) = split(4, &[b"012", b"345", b"67\nx\n"]);
        assert_eq!(lines, vec![(b"01234".to_vec(), 9), (b"x".to_vec(), 11)]);
        assert_eq!(discarded, 3);
    }
}
