//! Multiplexed connections and their streams, with stream limits enforced here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{BoxFuture, StreamError};

/// A byte stream a muxer hands out: tokio's `AsyncRead + AsyncWrite`, where `poll_shutdown`
/// finishes the sending half and dropping without finishing resets the stream.
pub trait StreamIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Makes this a priority stream: its writes never wait behind the data of the connection's
    /// other streams that the muxer holds (the node's control stream). Takes effect only before
    /// the first write. The default does nothing (a muxer without priorities).
    fn set_priority(&mut self, priority: bool) {
        let _ = priority;
    }
}

/// An in-memory pipe as a stream (tests and in-memory muxers).
impl StreamIo for tokio::io::DuplexStream {}

/// What a stream multiplexer (yamux, QUIC) provides. [`MuxedConnection`] adds the stream limits.
pub trait Muxer: Send + Sync + 'static {
    /// Opens an outbound stream. The remote learns of it when the first bytes arrive.
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn StreamIo>, StreamError>>;
    /// Waits for the next inbound stream; `None` once the connection is closed.
    /// Only one task calls this at a time.
    fn accept(&self) -> BoxFuture<'_, Option<Box<dyn StreamIo>>>;
    /// Closes the connection (open streams end) and waits until it is closed, or until the
    /// muxer's own close timeout passes.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// Whether the connection has closed (locally or by the remote, or by an error).
    fn is_closed(&self) -> bool;
}

/// How many streams may be open at once on one connection, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams we open. [`MuxedConnection::open_stream`] waits when all are in use.
    pub outbound: usize,
    /// Streams the remote opens. Over this, new inbound streams are reset and counted.
    pub inbound: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self { outbound: 64, inbound: 64 }
    }
}

/// An authenticated, multiplexed connection. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct MuxedConnection {
    inner: Arc<Inner>,
}

struct Inner {
    muxer: Box<dyn Muxer>,
    outbound: Arc<Semaphore>,
    inbound: Arc<Semaphore>,
    limits: StreamLimits,
    refused_inbound: AtomicU64,
}

impl MuxedConnection {
    /// Wraps a muxer, enforcing `limits`.
    pub fn new(muxer: impl Muxer, limits: StreamLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                muxer: Box::new(muxer),
                outbound: Arc::new(Semaphore::new(limits.outbound)),
                inbound: Arc::new(Semaphore::new(limits.inbound)),
                limits,
                refused_inbound: AtomicU64::new(0),
            }),
        }
    }

    /// Opens an outbound stream, waiting for a free slot if [`StreamLimits::outbound`] streams
    /// are open. Bound the wait with a timeout if needed.
    pub async fn open_stream(&self) -> Result<Stream, StreamError> {
        let permit = Arc::clone(&self.inner.outbound)
            .acquire_owned()
            .await
            .map_err(|_| StreamError::ConnectionClosed)?;
        let io = self.inner.muxer.open().await?;
        Ok(Stream { io, _permit: permit })
    }

    /// Waits for the next inbound stream within the limit; `None` once the connection closed.
    /// Streams over [`StreamLimits::inbound`] are reset at once and counted
    /// ([`MuxedConnection::refused_inbound`]).
    pub async fn accept_stream(&self) -> Option<Stream> {
        loop {
            let io = self.inner.muxer.accept().await?;
            match Arc::clone(&self.inner.inbound).try_acquire_owned() {
                Ok(permit) => return Some(Stream { io, _permit: permit }),
                Err(_) => {
                    self.inner.refused_inbound.fetch_add(1, Ordering::Relaxed);
                    drop(io); // dropping without finishing resets the stream
                }
            }
        }
    }

    /// Closes the connection and waits until it is closed.
    pub async fn close(&self) {
        self.inner.outbound.close();
        self.inner.muxer.close().await;
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.muxer.is_closed()
    }

    /// Inbound streams reset because the inbound limit was reached.
    pub fn refused_inbound(&self) -> u64 {
        self.inner.refused_inbound.load(Ordering::Relaxed)
    }

    /// Streams open now: (outbound, inbound).
    pub fn open_streams(&self) -> (usize, usize) {
        (
            self.inner.limits.outbound - self.inner.outbound.available_permits(),
            self.inner.limits.inbound - self.inner.inbound.available_permits(),
        )
    }

    /// The limits in force.
    pub fn limits(&self) -> StreamLimits {
        self.inner.limits
    }
}

impl std::fmt::Debug for MuxedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxedConnection")
            .field("open_streams", &self.open_streams())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// One stream of a [`MuxedConnection`]: `AsyncRead + AsyncWrite`.
///
/// [`Stream::finish`] (or `poll_shutdown`) ends our sending half; the remote reads EOF.
/// Dropping a stream that was not finished resets it. The stream holds its slot in the
/// connection's stream limit until dropped.
pub struct Stream {
    io: Box<dyn StreamIo>,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    /// Finishes the sending half: everything written is delivered, then the remote reads EOF.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }

    /// Makes this a priority stream (see [`StreamIo::set_priority`]): call it before the first
    /// write.
    pub fn set_priority(&mut self, priority: bool) {
        self.io.set_priority(priority);
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, DuplexStream};
    use tokio::sync::{Mutex, mpsc};

    /// An in-memory muxer over duplex pipes: enough to test the limit bookkeeping.
    struct PipeMuxer {
        peer_tx: mpsc::Sender<DuplexStream>,
        inbound: Mutex<mpsc::Receiver<DuplexStream>>,
    }

    impl Muxer for PipeMuxer {
        fn open(&self) -> BoxFuture<'_, Result<Box<dyn StreamIo>, StreamError>> {
            Box::pin(async move {
                let (a, b) = tokio::io::duplex(1024);
                self.peer_tx.send(b).await.map_err(|_| StreamError::ConnectionClosed)?;
                Ok(Box::new(a) as Box<dyn StreamIo>)
            })
        }
        fn accept(&self) -> BoxFuture<'_, Option<Box<dyn StreamIo>>> {
            Box::pin(async move {
                let s = self.inbound.lock().await.recv().await?;
                Some(Box::new(s) as Box<dyn StreamIo>)
            })
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn is_closed(&self) -> bool {
            false
        }
    }

    fn pair(limits: StreamLimits) -> (MuxedConnection, MuxedConnection) {
        let (a_tx, a_rx) = mpsc::channel(16);
        let (b_tx, b_rx) = mpsc::channel(16);
        let a = PipeMuxer { peer_tx: b_tx, inbound: Mutex::new(a_rx) };
        let b = PipeMuxer { peer_tx: a_tx, inbound: Mutex::new(b_rx) };
        (MuxedConnection::new(a, limits), MuxedConnection::new(b, limits))
    }

    #[tokio::test]
    async fn outbound_limit_waits_for_a_free_slot() {
        let (a, _b) = pair(StreamLimits { outbound: 2, inbound: 2 });
        let s1 = a.open_stream().await.unwrap();
        let _s2 = a.open_stream().await.unwrap();
        assert_eq!(a.open_streams(), (2, 0));
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), a.open_stream());
        assert!(third.await.is_err(), "a third stream must wait");
        drop(s1);
        let _s3 = a.open_stream().await.unwrap();
        assert_eq!(a.open_streams(), (2, 0));
    }

    #[tokio::test]
    async fn inbound_over_limit_is_reset_and_counted() {
        let (a, b) = pair(StreamLimits { outbound: 4, inbound: 1 });
        let mut s1 = a.open_stream().await.unwrap();
        let mut s2 = a.open_stream().await.unwrap();
        s1.write_all(b"one").await.unwrap();
        let mut in1 = b.accept_stream().await.unwrap();
        let mut buf = [0u8; 3];
        in1.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"one");
        // The second inbound stream is over the limit: accepting it resets it (the pipe closes),
        // and accept goes on waiting for the next one.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), b.accept_stream());
        assert!(waiting.await.is_err());
        assert_eq!(b.refused_inbound(), 1);
        let mut rest = Vec::new();
        assert_eq!(s2.read_to_end(&mut rest).await.unwrap(), 0, "refused stream reads EOF");
    }
}
