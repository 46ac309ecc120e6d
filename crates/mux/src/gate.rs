//! The write gate: how much ordinary stream data may wait inside yamux, ahead of a priority
//! stream's frames.
//!
//! yamux 0.14 queues each stream's frames in a channel of its own (up to 11 frames, each up to
//! `split_send_size`) and writes the streams' frames in no particular order, so without a
//! bound a busy stream can hold megabytes inside yamux ahead of a pong. The gate counts the data
//! bytes yamux accepted from ordinary streams and the data bytes the connection wrote below
//! (read off the yamux frames it writes, see [`Counted`]); an ordinary stream's write waits
//! while the difference is at the limit. A priority stream (the node's control stream) never
//! waits, so what can be ahead of its frames is bounded by the limit plus one frame.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes of ordinary stream data yamux holds, and the writers waiting for room.
#[derive(Debug)]
pub(crate) struct WriteGate {
    /// Data bytes yamux accepted from ordinary (not priority) streams.
    handed: AtomicU64,
    /// Data bytes of ordinary streams' frames written to the connection's I/O.
    drained: AtomicU64,
    limit: u64,
    waiting: Mutex<Vec<Waker>>,
}

impl WriteGate {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            handed: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            limit: limit.max(1) as u64,
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// Ordinary stream data inside yamux now.
    pub(crate) fn queued(&self) -> u64 {
        let drained = self.drained.load(Ordering::Acquire);
        self.handed.load(Ordering::Acquire).saturating_sub(drained)
    }

    /// Ready when an ordinary stream may hand yamux more data; otherwise `cx` is woken when it
    /// may.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.queued() < self.limit {
            return Poll::Ready(());
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        drop(waiting);
        // The connection may have written in between: look again.
        if self.queued() < self.limit { Poll::Ready(()) } else { Poll::Pending }
    }

    /// yamux accepted `n` bytes from an ordinary stream.
    pub(crate) fn handed(&self, n: usize) {
        self.handed.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// The connection wrote `n` data bytes of ordinary streams below.
    fn drained(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.drained.fetch_add(n, Ordering::AcqRel);
        if self.queued() < self.limit {
            let woken =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            woken.into_iter().for_each(Waker::wake);
        }
    }
}

/// The connection's I/O as yamux writes it: counts the data bytes of the frames written, for
/// the [`WriteGate`]. Priority streams' data counts too, on both sides of the gate's ledger
/// (see [`Counted::priority`]), so only ordinary streams' bytes are compared.
pub(crate) struct Counted<S> {
    inner: S,
    gate: std::sync::Arc<WriteGate>,
    frames: FrameScan,
    /// Stream ids marked priority: their data is not counted as drained.
    pub(crate) priority: std::sync::Arc<PriorityIds>,
}

/// The stream ids whose data bypasses the gate.
#[derive(Debug, Default)]
pub(crate) struct PriorityIds(Mutex<Vec<u32>>);

impl PriorityIds {
    pub(crate) fn insert(&self, id: u32) {
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(&id)
    }
}

impl<S> Counted<S> {
    pub(crate) fn new(
        inner: S,
        gate: std::sync::Arc<WriteGate>,
        priority: std::sync::Arc<PriorityIds>,
    ) -> Self {
        Self { inner, gate, frames: FrameScan::default(), priority }
    }
}

/// Follows the yamux frames in the bytes written: a 12-byte header (version, type, flags, stream
/// id, length, big-endian), then `length` bytes of body for a data frame (type 0) and none for
/// the others. Writes may cut frames anywhere.
#[derive(Debug, Default)]
struct FrameScan {
    header: [u8; 12],
    have: usize,
    /// Body bytes still to come of the data frame in progress, and whether they count.
    body_left: u64,
    body_counts: bool,
}

impl FrameScan {
    /// Feeds written bytes; returns the counted data bytes among them.
    fn feed(&mut self, mut bytes: &[u8], priority: &PriorityIds) -> u64 {
        let mut counted = 0;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = (bytes.len() as u64).min(self.body_left);
                if self.body_counts {
                    counted += n;
                }
                self.body_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let n = (12 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 12 {
                self.have = 0;
                let h = &self.header;
                if h[1] == 0 {
                    let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                    self.body_left = u64::from(u32::from_be_bytes([h[8], h[9], h[10], h[11]]));
                    self.body_counts = !priority.contains(id);
                }
            }
        }
        counted
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            let counted = this.frames.feed(&buf[..*n], &this.priority);
            this.gate.drained(counted);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, id: u32, len: u32) -> Vec<u8> {
        let mut f = vec![0, kind, 0, 0];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&len.to_be_bytes());
        if kind == 0 {
            f.extend(std::iter::repeat_n(7u8, len as usize));
        }
        f
    }

    /// Data bytes are counted whatever the cuts, window updates and pings are not, and a
    /// priority stream's data is left out.
    #[test]
    fn the_scan_counts_ordinary_data_bytes_across_any_cut() {
        let priority = PriorityIds::default();
        priority.insert(1);
        let mut bytes = frame(0, 3, 1000);
        bytes.extend(frame(1, 3, 65536)); // a window update: no body
        bytes.extend(frame(0, 1, 50)); // priority data
        bytes.extend(frame(2, 0, 7)); // a ping
        bytes.extend(frame(0, 5, 20));
        for cut in [1, 5, 11, 12, 13, 999, bytes.len()] {
            let mut scan = FrameScan::default();
            let counted: u64 = bytes.chunks(cut).map(|c| scan.feed(c, &priority)).sum();
            assert_eq!(counted, 1020, "cut {cut}");
        }
    }

    #[test]
    fn the_gate_opens_when_the_connection_writes() {
        let gate = std::sync::Arc::new(WriteGate::new(100));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(gate.poll_room(&mut cx).is_ready());
        gate.handed(150);
        assert!(gate.poll_room(&mut cx).is_pending());
        gate.drained(50);
        assert!(gate.poll_room(&mut cx).is_pending(), "100 queued: at the limit");
        gate.drained(1);
        assert!(gate.poll_room(&mut cx).is_ready(), "below it");
    }
}
