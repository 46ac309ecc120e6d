//! One QUIC bidirectional stream seen through tokio's I/O traits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use quinn::{ReadError, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::muxer::StreamCredit;

/// The QUIC application error code of `RESET_STREAM` when a stream is dropped without being
/// finished (the sending half is abandoned). The remote's reads fail with
/// [`io::ErrorKind::ConnectionReset`].
pub const RESET_CODE: u32 = 1;

/// The QUIC application error code of `STOP_SENDING` when a stream is dropped before its
/// receiving half was read to the end (we want no more data). The remote's writes fail with
/// [`io::ErrorKind::ConnectionReset`].
pub const STOP_CODE: u32 = 2;

/// The priority [`QuicStream`] gives quinn for a priority stream (ordinary streams have 0;
/// quinn sends the buffered data of higher-priority streams first).
pub(crate) const HIGH_PRIORITY: i32 = 1;

/// A QUIC bidirectional stream as a tokio `AsyncRead + AsyncWrite`
/// ([`sinew_transport::StreamIo`]).
///
/// - `poll_shutdown` finishes the sending half (FIN after the data written) and returns at once,
///   as yamux does: quinn delivers the data and the FIN while the connection lives. A muxer
///   close waits (bounded) for what finished streams still have in flight; see
///   [`QuicMuxer`](crate::muxer).
/// - Dropping it without finishing resets the sending half ([`RESET_CODE`]); dropping it
///   before reading to the end stops the receiving half ([`STOP_CODE`]).
/// - A read ends cleanly (0 bytes) only at the remote's FIN; a reset stream or a lost or closed
///   connection is an error of kind `ConnectionReset`.
pub(crate) struct QuicStream {
    send: SendStream,
    recv: RecvStream,
    /// `finish` was called: the sending half must not be reset on drop.
    finished: bool,
    /// The connection's count of finished streams still in flight.
    in_flight: Arc<InFlight>,
    /// For an inbound stream, the remote's stream credit, told when the stream is dropped.
    credit: Option<Arc<StreamCredit>>,
}

impl QuicStream {
    pub(crate) fn new(
        send: SendStream,
        recv: RecvStream,
        in_flight: Arc<InFlight>,
        credit: Option<Arc<StreamCredit>>,
    ) -> Self {
        Self { send, recv, finished: false, in_flight, credit }
    }
}

/// Finished streams of one connection whose data the remote has not acknowledged yet, so that
/// a close can let them drain first.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    drained: Notify,
}

impl InFlight {
    /// Counts a finished stream until `acknowledged` resolves (acknowledged, stopped by the
    /// remote, or the connection gone: each ends it).
    fn track(self: &Arc<Self>, acknowledged: impl Future<Output = ()> + Send + 'static) {
        self.count.fetch_add(1, Ordering::AcqRel);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            acknowledged.await;
            if this.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.drained.notify_waiters();
            }
        });
    }

    /// Resolves once no finished stream is in flight.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn read_error(error: ReadError) -> io::Error {
    match error {
        ReadError::IllegalOrderedRead => io::Error::new(io::ErrorKind::InvalidInput, error),
        // Reset by the remote, the connection lost or closed, or stopped locally: not a FIN.
        other => io::Error::new(io::ErrorKind::ConnectionReset, other),
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().recv.poll_read_buf(cx, buf).map_err(read_error)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn transmits what was written without being asked to.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            this.send.finish().map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
            this.finished = true;
            let stopped = this.send.stopped();
            this.in_flight.track(async move {
                let _ = stopped.await;
            });
        }
        // As on yamux, finishing queues the FIN after the data written and returns: quinn keeps
        // sending (and retransmitting) both while the connection lives. Waiting for the
        // remote's acknowledgement here would make a finish cover the whole send window (16
        // MiB) on a slow path, and never end against a peer that withholds acknowledgements.
        Poll::Ready(Ok(()))
    }
}

impl sinew_transport::StreamIo for QuicStream {
    fn set_priority(&mut self, priority: bool) {
        let level = if priority { HIGH_PRIORITY } else { 0 };
        // Fails only on a stream already closed, where priority no longer matters.
        let _ = self.send.set_priority(level);
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        // quinn finishes a dropped send stream; sinew's contract is that dropping resets it.
        // Both calls fail harmlessly on a half already closed.
        if !self.finished {
            let _ = self.send.reset(VarInt::from_u32(RESET_CODE));
        }
        let _ = self.recv.stop(VarInt::from_u32(STOP_CODE));
        if let Some(credit) = &self.credit {
            credit.released();
        }
    }
}
