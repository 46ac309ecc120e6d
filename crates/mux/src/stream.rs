//! A yamux stream seen through tokio's I/O traits.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead as _, AsyncWrite as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use std::sync::Arc;

use crate::gate::{PriorityIds, WriteGate};

/// Most bytes one read offers yamux (see `poll_read`).
const READ_SLICE: usize = 64 * 1024;

type EndWait = Option<Pin<Box<WaitForCancellationFutureOwned>>>;

/// One yamux stream as a tokio `AsyncRead + AsyncWrite` ([`sinew_transport::StreamIo`]).
///
/// `poll_shutdown` sends FIN (yamux `poll_close`, queued behind the data already written);
/// dropping the stream makes the driver send RST (or FIN if the remote already finished:
/// yamux's choice).
///
/// yamux wakes a parked reader (or a writer waiting for window) when data, a window update, a
/// FIN or a RST arrives, or when the connection fails, but not when the connection is closed
/// locally: those would wait forever. So a pending read or write also waits on the driver's end
/// (`ended`), which is what ends them after a local close. The futures for that wait are
/// allocated the first time a read or a write has to wait.
pub(crate) struct YamuxStream {
    inner: yamux::Stream,
    ended: CancellationToken,
    read_wait: EndWait,
    write_wait: EndWait,
    /// The connection's write gate ([`WriteGate`]), and whether this stream bypasses it.
    gate: Arc<WriteGate>,
    priority_ids: Arc<PriorityIds>,
    priority: bool,
    /// Whether anything was written (priority can only be set before).
    wrote: bool,
}

impl YamuxStream {
    pub(crate) fn new(inner: yamux::Stream, shared: &crate::driver::Shared) -> Self {
        Self {
            inner,
            ended: shared.ended.clone(),
            read_wait: None,
            write_wait: None,
            gate: Arc::clone(&shared.gate),
            priority_ids: Arc::clone(&shared.priority_ids),
            priority: false,
            wrote: false,
        }
    }
}

/// Whether the connection's driver has ended; registers `cx` to be woken when it does.
fn poll_ended(slot: &mut EndWait, ended: &CancellationToken, cx: &mut Context<'_>) -> bool {
    if ended.is_cancelled() {
        return true;
    }
    slot.get_or_insert_with(|| Box::pin(ended.clone().cancelled_owned()))
        .as_mut()
        .poll(cx)
        .is_ready()
}

fn connection_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "yamux connection closed")
}

/// A write-side poll of the yamux stream that also ends when the driver does.
fn poll_write_side<T>(
    wait: &mut EndWait,
    ended: &CancellationToken,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match poll {
        Poll::Pending if poll_ended(wait, ended, cx) => Poll::Ready(Err(connection_closed())),
        other => other,
    }
}

impl AsyncRead for YamuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // yamux reads into initialized memory, so the part of `buf` offered is zeroed first.
        // Offer at most READ_SLICE: a caller reading into a large uninitialized buffer (a
        // growing message buffer) would otherwise have all of it zeroed on every read.
        let slice = buf.initialize_unfilled_to(buf.remaining().min(READ_SLICE));
        let n = match Pin::new(&mut this.inner).poll_read(cx, slice) {
            Poll::Ready(result) => result?,
            Poll::Pending => {
                if !poll_ended(&mut this.read_wait, &this.ended, cx) {
                    return Poll::Pending;
                }
                // The driver is gone, so nothing more can arrive: what it buffered before it
                // ended is read first; then, as no FIN came (the read above would have seen
                // it), the stream was cut short.
                match Pin::new(&mut this.inner).poll_read(cx, slice) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => 0,
                }
            }
        };
        // yamux reads a reset (or the connection's end) as the end of the stream. Only the
        // remote's FIN ends it cleanly: anything else is an error, never a clean EOF.
        if n == 0 && !this.inner.fin_received() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An ordinary stream waits while the connection holds enough of their data already.
        if !this.priority && this.gate.poll_room(cx).is_pending() {
            return poll_write_side(&mut this.write_wait, &this.ended, cx, Poll::Pending);
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.wrote = true;
            if !this.priority {
                this.gate.handed(*n);
            }
        }
        poll_write_side(&mut this.write_wait, &this.ended, cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        poll_write_side(&mut this.write_wait, &this.ended, cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_close(cx);
        poll_write_side(&mut this.write_wait, &this.ended, cx, poll)
    }
}

impl sinew_transport::StreamIo for YamuxStream {
    fn set_priority(&mut self, priority: bool) {
        // Only before the first write: the gate's ledger counts a stream's bytes one way.
        if self.wrote || self.priority == priority {
            return;
        }
        self.priority = priority;
        if priority {
            self.priority_ids.insert(self.inner.id().val());
        }
    }
}
