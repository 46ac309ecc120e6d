//! The task that owns a yamux connection and polls it for as long as it lives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tokio_util::compat::Compat;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::gate::{PriorityIds, WriteGate};
use crate::stream::YamuxStream;
use crate::window::WindowGrant;

/// An open request: the driver answers with the new stream, or drops the sender when it cannot
/// open one (the connection is closing or failed).
pub(crate) type OpenRequest = oneshot::Sender<Box<YamuxStream>>;

/// State shared by the driver, the muxer handle, the streams and [`crate::YamuxStats`].
pub(crate) struct Shared {
    /// Cancelled when the driver ends, whatever the reason (also if its task is aborted).
    pub(crate) ended: CancellationToken,
    close_requested: AtomicBool,
    driver_waker: AtomicWaker,
    pub(crate) queue_full_resets: AtomicU64,
    /// The connection's receive-window cap, as granted at creation.
    pub(crate) window: AtomicUsize,
    /// How much ordinary stream data yamux may hold ahead of priority streams.
    pub(crate) gate: Arc<WriteGate>,
    /// The priority streams' ids.
    pub(crate) priority_ids: Arc<PriorityIds>,
}

impl Shared {
    pub(crate) fn new(write_queue: usize) -> Self {
        Self {
            gate: Arc::new(WriteGate::new(write_queue)),
            priority_ids: Arc::default(),
            ended: CancellationToken::new(),
            close_requested: AtomicBool::new(false),
            driver_waker: AtomicWaker::new(),
            queue_full_resets: AtomicU64::new(0),
            window: AtomicUsize::new(0),
        }
    }

    /// Asks the driver to close the connection gracefully. Never blocks.
    pub(crate) fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        self.driver_waker.wake();
    }
}

/// Why the driver stopped driving the connection.
enum End {
    /// A handle asked to close, or every handle was dropped.
    Local,
    /// The remote closed the connection (GoAway or end of the socket).
    Remote,
    /// The connection failed (I/O error, protocol violation).
    Failed(yamux::ConnectionError),
}

/// Where the driver is in its life.
enum Phase {
    /// Driving the connection.
    Running,
    /// Closing gracefully (yamux `poll_close`) until the deadline.
    Closing(Pin<Box<Sleep>>),
    /// Ended; `ended` is cancelled.
    Done,
}

/// Owns the yamux connection; see the crate documentation for the I/O contract.
///
/// A hand-written future rather than an `async fn`: an `async fn` keeps its argument and its
/// locals side by side, which doubled the size of the task (984 bytes instead of 472).
pub(crate) struct Driver<S> {
    conn: yamux::Connection<Compat<S>>,
    shared: Arc<Shared>,
    /// Open requests from the handle.
    opens: mpsc::Receiver<OpenRequest>,
    /// The request being served while yamux is not ready to open (its ACK backlog is full).
    pending_open: Option<OpenRequest>,
    /// New inbound streams, towards `accept`.
    inbound: mpsc::Sender<Box<YamuxStream>>,
    close_timeout: Duration,
    phase: Phase,
    /// Its share of the node-wide window budget, given back when the driver ends.
    _grant: Option<Box<WindowGrant>>,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Driver<S> {
    pub(crate) fn new(
        conn: yamux::Connection<Compat<S>>,
        shared: Arc<Shared>,
        opens: mpsc::Receiver<OpenRequest>,
        inbound: mpsc::Sender<Box<YamuxStream>>,
        close_timeout: Duration,
    ) -> Self {
        Self {
            conn,
            shared,
            opens,
            pending_open: None,
            inbound,
            close_timeout,
            phase: Phase::Running,
            _grant: None,
        }
    }

    /// Holds `grant` for as long as the driver lives.
    pub(crate) fn with_grant(mut self, grant: Option<WindowGrant>) -> Self {
        self._grant = grant.map(Box::new);
        self
    }

    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        self.shared.driver_waker.register(cx.waker());
        loop {
            if self.shared.close_requested.load(Ordering::Acquire) {
                return Poll::Ready(End::Local);
            }
            // Reads and writes the socket for every stream; yields new inbound streams.
            match self.conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    self.deliver(stream);
                    continue;
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(End::Failed(error)),
                Poll::Ready(None) => return Poll::Ready(End::Remote),
                Poll::Pending => {}
            }
            if self.pending_open.is_none() {
                match self.opens.poll_next_unpin(cx) {
                    Poll::Ready(Some(request)) => {
                        // An opener that gave up gets no stream.
                        if !request.is_closed() {
                            self.pending_open = Some(request);
                        }
                        continue;
                    }
                    // Every handle is gone.
                    Poll::Ready(None) => return Poll::Ready(End::Local),
                    Poll::Pending => {}
                }
            }
            if let Some(request) = self.pending_open.take() {
                match self.conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(stream)) => {
                        let stream = YamuxStream::new(stream, &self.shared);
                        // If the opener gave up meanwhile, the stream is dropped (reset); the
                        // remote never heard of it.
                        let _ = request.send(Box::new(stream));
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        // yamux is now cleaning up the whole connection; the opener gets
                        // `ConnectionClosed` and the next `poll_next_inbound` reports the end.
                        debug!(%error, "yamux refused to open a stream");
                        drop(request);
                        continue;
                    }
                    Poll::Pending => self.pending_open = Some(request),
                }
            }
            return Poll::Pending;
        }
    }

    /// Queues a new inbound stream for `accept`, or resets it if the queue is full: the driver
    /// never waits for the application.
    fn deliver(&mut self, stream: yamux::Stream) {
        let id = stream.id();
        let stream = Box::new(YamuxStream::new(stream, &self.shared));
        match self.inbound.try_send(stream) {
            Ok(()) => {}
            Err(error) if error.is_full() => {
                self.shared.queue_full_resets.fetch_add(1, Ordering::Relaxed);
                debug!(stream = %id, "inbound queue full: stream reset");
                // Dropping the stream (inside `error`) resets it.
            }
            // The handle is gone and the connection is closing.
            Err(_) => trace!(stream = %id, "inbound stream after the handle was dropped"),
        }
    }

    /// Stops taking open requests and starts yamux's graceful close.
    fn start_closing(&mut self) {
        // Queued requests fail with `ConnectionClosed` when dropped.
        self.opens.close();
        self.pending_open = None;
        self.phase = Phase::Closing(Box::pin(tokio::time::sleep(self.close_timeout)));
    }

    /// Signals the end before the channels close (they close when the task drops the driver),
    /// so that whoever sees `accept` return `None` or an open fail also sees `is_closed`.
    fn finish(&mut self) -> Poll<()> {
        self.shared.ended.cancel();
        self.phase = Phase::Done;
        Poll::Ready(())
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Future for Driver<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Running => match this.poll_connection(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(End::Local) => this.start_closing(),
                    Poll::Ready(End::Remote) => {
                        debug!("yamux connection closed by the remote");
                        return this.finish();
                    }
                    Poll::Ready(End::Failed(error)) => {
                        debug!(%error, "yamux connection failed");
                        return this.finish();
                    }
                },
                Phase::Closing(deadline) => {
                    match this.conn.poll_close(cx) {
                        Poll::Ready(Ok(())) => debug!("yamux connection closed"),
                        Poll::Ready(Err(error)) => {
                            debug!(%error, "yamux connection failed while closing");
                        }
                        Poll::Pending => {
                            if deadline.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            debug!(timeout = ?this.close_timeout, "yamux close timed out");
                        }
                    }
                    return this.finish();
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<S> Drop for Driver<S> {
    /// Also signals the end when the task is aborted or its runtime shuts down.
    fn drop(&mut self) {
        self.shared.ended.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_future_stays_small() {
        // It is the bulk of the driver task's allocation; an `async fn` doubled it.
        let size = size_of::<Driver<tokio::net::TcpStream>>();
        eprintln!("driver future: {size} bytes");
        assert!(size <= 512, "{size} bytes");
    }
}
