//! Raw application streams: `Node::open_stream` and inbound stream handlers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use sinew_codec::Opcode;
use sinew_transport::Stream;
use sinew_types::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::stats::StreamGuard;

/// A raw byte stream to a peer, for protocols that want a stream rather than messages.
///
/// `AsyncRead + AsyncWrite`. [`AppStream::finish`] (or `shutdown`) ends our sending half; the
/// remote reads EOF. Dropping the stream without finishing resets it. While open, it keeps the
/// connection from being idle.
pub struct AppStream {
    inner: Stream,
    guard: StreamGuard,
    peer: PeerId,
    opcode: Opcode,
}

impl AppStream {
    pub(crate) fn new(inner: Stream, guard: StreamGuard, peer: PeerId, opcode: Opcode) -> Self {
        Self { inner, guard, peer, opcode }
    }

    /// The peer at the other end.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The opcode the stream was opened for.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// Finishes the sending half: what was written is delivered, then the remote reads EOF.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.inner.finish().await
    }
}

impl std::fmt::Debug for AppStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStream").field("peer", &self.peer).field("opcode", &self.opcode).finish()
    }
}

impl AsyncRead for AppStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.guard.stats().bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for AppStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.guard.stats().bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream a peer opened to one of our stream handlers.
#[derive(Debug)]
pub struct IncomingStream {
    /// Who opened it.
    pub peer: PeerId,
    /// The stream (the header has been read; what follows is the peer's data).
    pub stream: AppStream,
}

/// Receives streams peers open for an opcode (see [`crate::Node::stream_handler`]).
///
/// Bounded by the node's inbox capacity: when full, new streams for this opcode are reset and a
/// [`crate::Event::MessageDropped`] is emitted.
#[derive(Debug)]
pub struct StreamInbox {
    pub(crate) rx: mpsc::Receiver<IncomingStream>,
}

impl StreamInbox {
    /// The next inbound stream; `None` once the node shut down.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

/// The inbound streams, as a [`futures::Stream`].
impl futures::Stream for StreamInbox {
    type Item = IncomingStream;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        self.get_mut().rx.poll_recv(cx)
    }
}
