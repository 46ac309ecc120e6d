//! The handle: sinew's [`Muxer`] over channels to the driver.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::channel::mpsc;
use futures::{SinkExt as _, StreamExt as _};
use sinew_transport::{BoxFuture, Muxer, StreamError, StreamIo};
use tokio::sync::{Mutex, oneshot};

use crate::driver::{OpenRequest, Shared};
use crate::stream::YamuxStream;

/// The [`Muxer`] handed to [`sinew_transport::MuxedConnection`]. Dropping it closes the
/// connection gracefully.
pub(crate) struct YamuxMuxer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) opens: mpsc::Sender<OpenRequest>,
    pub(crate) inbound: Mutex<mpsc::Receiver<Box<YamuxStream>>>,
}

impl Muxer for YamuxMuxer {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn StreamIo>, StreamError>> {
        Box::pin(async move {
            let (reply, stream) = oneshot::channel();
            // Each sender has a slot of its own: at most one request per waiting opener.
            let mut opens = self.opens.clone();
            opens.send(reply).await.map_err(|_| StreamError::ConnectionClosed)?;
            let stream = stream.await.map_err(|_| StreamError::ConnectionClosed)?;
            Ok(stream as Box<dyn StreamIo>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Box<dyn StreamIo>>> {
        Box::pin(async move {
            // Streams still queued when the connection ended are not handed out.
            if self.shared.ended.is_cancelled() {
                return None;
            }
            let stream = self.inbound.lock().await.next().await?;
            Some(stream as Box<dyn StreamIo>)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.request_close();
            // The driver bounds the graceful close by the close timeout.
            self.shared.ended.cancelled().await;
        })
    }

    fn is_closed(&self) -> bool {
        self.shared.ended.is_cancelled()
    }
}

impl Drop for YamuxMuxer {
    fn drop(&mut self) {
        self.shared.request_close();
    }
}

/// Counters and the end signal of one yamux connection's driver. Cheap to clone; does not keep
/// the connection open.
#[derive(Clone)]
pub struct YamuxStats {
    pub(crate) shared: Arc<Shared>,
}

impl YamuxStats {
    /// Inbound streams reset because the inbound queue was full (nobody was calling `accept`
    /// fast enough). Streams refused for the inbound stream limit are counted by
    /// [`MuxedConnection::refused_inbound`](sinew_transport::MuxedConnection::refused_inbound).
    pub fn queue_full_resets(&self) -> u64 {
        self.shared.queue_full_resets.load(Ordering::Relaxed)
    }

    /// The connection's receive-window cap: yamux's guaranteed floor plus what the node-wide
    /// [`WindowBudget`](crate::WindowBudget) granted.
    pub fn window(&self) -> usize {
        self.shared.window.load(Ordering::Relaxed)
    }

    /// Whether the driver task has ended (the connection is closed).
    pub fn is_ended(&self) -> bool {
        self.shared.ended.is_cancelled()
    }

    /// Waits until the driver task has ended.
    pub async fn ended(&self) {
        self.shared.ended.cancelled().await;
    }
}

impl fmt::Debug for YamuxStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YamuxStats")
            .field("queue_full_resets", &self.queue_full_resets())
            .field("ended", &self.is_ended())
            .finish()
    }
}
