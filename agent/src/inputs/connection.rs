//! The read loop every connection input shares (TCP, Unix and syslog): read a chunk, cut
//! it into raw lines with the input's framing, turn each into an output line, count it,
//! and hand the chunk's lines to the batcher in order, waiting while its channel is full
//! (so the kernel's socket buffers fill and the sender slows down).

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::InputLine;
use super::lines::LineSplitter;
use super::socket::SocketContext;
use crate::batch::lane_of;
use crate::metrics::{InputKind, inc};

/// How an input cuts its byte stream into raw lines.
pub(crate) trait Framing {
    /// Feeds a chunk; calls `emit` with each complete raw line.
    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8]));
    /// The peer closed: calls `emit` with an unfinished last line, if any.
    fn finish(&mut self, emit: &mut dyn FnMut(&[u8]));
    /// Bytes of over-long lines discarded since the last call.
    fn take_discarded(&mut self) -> u64;
}

impl Framing for LineSplitter {
    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        LineSplitter::feed(self, data, |raw, _| emit(raw));
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if let Some(rest) = self.take_partial() {
            emit(&rest);
        }
    }

    fn take_discarded(&mut self) -> u64 {
        LineSplitter::take_discarded(self)
    }
}

/// Reads `stream` until the peer closes, a read fails or `shutdown` turns true. Each raw
/// line becomes `to_line(raw)` (the enriched line and whether it was cut), counted under
/// `kind` with `raw.len() + framing_bytes` bytes.
pub(crate) async fn read_lines<S: AsyncRead + Unpin>(
    mut stream: S,
    kind: InputKind,
    framing: &mut (dyn Framing + Send),
    framing_bytes: u64,
    ctx: &SocketContext,
    mut shutdown: watch::Receiver<bool>,
    to_line: &(dyn Fn(&[u8]) -> (String, bool) + Sync),
) {
    let counters = ctx.metrics.input(kind);
    let lane = lane_of(kind.as_str());
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<InputLine> = Vec::new();
    loop {
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(input = kind.as_str(), error = %e, "Connection read failed.");
                return;
            }
        };
        let mut emit = |raw: &[u8]| {
            inc(&counters.events, 1);
            inc(&counters.bytes, raw.len() as u64 + framing_bytes);
            let (line, truncated) = to_line(raw);
            if truncated {
                inc(&counters.truncated_lines, 1);
            }
            out.push(InputLine {
                line,
                position: None,
                lane,
            });
        };
        if n == 0 {
            framing.finish(&mut emit);
        } else {
            framing.feed(&buf[..n], &mut emit);
        }
        inc(&counters.discarded_bytes, framing.take_discarded());
        for line in out.drain(..) {
            if ctx.tx.send(line).await.is_err() {
                return;
            }
        }
        if n == 0 {
            return;
        }
    }
}
