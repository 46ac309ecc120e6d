//! Where the remote's message stream goes: from the task that read its first frame to the
//! connection task. A remote may open one per connection; a second is a protocol error.
//!
//! A slot rather than a channel: every connection has one, and a tokio channel costs about
//! 800 bytes where this costs about 64.

use std::sync::Mutex;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use sinew_transport::Stream;

/// The remote's message stream, once it arrives.
#[derive(Default)]
pub(crate) struct MessageSlot {
    state: Mutex<State>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct State {
    stream: Option<Box<Stream>>,
    /// Message streams the remote opened.
    arrived: u8,
    /// Whether a second one was reported.
    reported: bool,
}

/// The remote opened a second message stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SecondStream;

impl MessageSlot {
    /// Hands over a message stream; a second one is dropped (reset) and reported.
    pub(crate) fn offer(&self, stream: Stream) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.arrived = state.arrived.saturating_add(1);
            if state.arrived == 1 {
                state.stream = Some(Box::new(stream));
            }
        }
        self.waker.wake();
    }

    /// The message stream when it has arrived; `SecondStream` once if the remote opened more.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Box<Stream>, SecondStream>> {
        self.waker.register(cx.waker());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = state.stream.take() {
            return Poll::Ready(Ok(stream));
        }
        if state.arrived > 1 && !state.reported {
            state.reported = true;
            return Poll::Ready(Err(SecondStream));
        }
        Poll::Pending
    }

    /// Waits for [`MessageSlot::poll_take`].
    pub(crate) async fn take(&self) -> Result<Box<Stream>, SecondStream> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }
}
