//! The system lane's queue: the frames one connection's control stream still has to write.
//!
//! System frames (pong, keepalive, identify, ack, error replies, protocol control) never wait
//! behind application frames: they have a queue of their own per connection, written by a
//! writer of their own on the control stream, while application frames travel on the sender's
//! message stream. The queue is small and bounded in bytes; pushing never waits.

use std::collections::VecDeque;
use std::sync::Mutex;

use sinew_codec::Frame;
use sinew_protocol::SendError;
use tokio::sync::Notify;

/// A bounded queue of system frames for one connection.
///
/// - [`SystemQueue::try_push`] refuses a frame that does not fit with [`SendError::Full`]:
///   what that means is the caller's to decide (the driver closes a connection whose remote
///   sends requests faster than it reads their answers, and a protocol's own frame is refused
///   to it).
/// - [`SystemQueue::finish`] ends the queue with an optional last frame (the `DISCONNECT`):
///   the writer writes what is queued, then that frame, then finishes the stream.
pub(crate) struct SystemQueue {
    state: Mutex<State>,
    writer: Notify,
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// Frames, and whether the host charged each to its credit (the driver's are; the
    /// application's own system frames, from `Node` handles, are not).
    frames: VecDeque<(Frame, bool)>,
    /// Bytes of host-charged frames popped and not yet reported to the host.
    host_popped: usize,
    bytes: usize,
    finished: bool,
    last: Option<Frame>,
}

/// What [`SystemQueue::pop_all`] found after the frames it moved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// More may come.
    Open,
    /// The queue was finished: write this last frame (if any), then finish the stream.
    Finished(Option<Frame>),
}

impl SystemQueue {
    /// A queue holding at most `capacity` bytes of encoded frames.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { state: Mutex::new(State::default()), writer: Notify::new(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The critical sections cannot panic; recover the guard either way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame if it fits now. `Full` when it does not, `TooLarge` if it could never
    /// fit, `NotConnected` once the queue was finished.
    pub(crate) fn try_push(&self, frame: Frame) -> Result<(), SendError> {
        self.push(frame, true)
    }

    /// Like [`SystemQueue::try_push`], for a frame the host did not charge (the application's
    /// own system frames): its bytes are not reported to the host as written.
    pub(crate) fn try_push_untracked(&self, frame: Frame) -> Result<(), SendError> {
        self.push(frame, false)
    }

    fn push(&self, frame: Frame, charged: bool) -> Result<(), SendError> {
        let len = frame.encoded_len();
        if len > self.capacity {
            return Err(SendError::TooLarge);
        }
        let mut state = self.lock();
        if state.finished {
            return Err(SendError::NotConnected);
        }
        if state.bytes + len > self.capacity {
            return Err(SendError::Full);
        }
        state.bytes += len;
        state.frames.push_back((frame, charged));
        drop(state);
        self.writer.notify_one();
        Ok(())
    }

    /// Moves every queued frame into `out`. Their bytes still count against the bound until the
    /// writer reports them written ([`SystemQueue::written`]): the bound covers what is queued
    /// and what is being written.
    pub(crate) fn pop_all(&self, out: &mut Vec<Frame>) -> Next {
        let mut state = self.lock();
        let mut host = 0;
        out.extend(state.frames.drain(..).map(|(frame, charged)| {
            if charged {
                host += frame.encoded_len();
            }
            frame
        }));
        state.host_popped += host;
        // Release the ring buffer: idle connections hold no queue memory.
        state.frames = VecDeque::new();
        if state.finished { Next::Finished(state.last.take()) } else { Next::Open }
    }

    /// The writer wrote frames popped earlier, of `bytes` encoded bytes: their room is free.
    /// Returns how many of those bytes the host had charged (to report to it).
    pub(crate) fn written(&self, bytes: usize) -> usize {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
        std::mem::take(&mut state.host_popped)
    }

    /// Waits until frames may be available (or the queue was finished).
    pub(crate) async fn ready(&self) {
        self.writer.notified().await;
    }

    /// Ends the queue: later pushes fail; the writer writes what is queued, then `last`.
    /// Only the first call counts.
    pub(crate) fn finish(&self, last: Option<Frame>) {
        self.finish_with(last, false);
    }

    /// Ends the queue at once: what is queued is dropped, so `last` (the goodbye of a fast
    /// close) is the next frame written.
    pub(crate) fn finish_now(&self, last: Option<Frame>) {
        self.finish_with(last, true);
    }

    fn finish_with(&self, last: Option<Frame>, drop_queued: bool) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        if drop_queued {
            state.frames = VecDeque::new();
            state.bytes = 0;
        }
        state.finished = true;
        state.last = last;
        drop(state);
        self.writer.notify_one();
    }

    /// Bytes queued now.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl std::fmt::Debug for SystemQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemQueue").field("queued_bytes", &self.queued_bytes()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sinew_codec::Opcode;

    fn frame(len: usize) -> Frame {
        Frame::message(Opcode::KEEPALIVE, Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn bounded_in_bytes_and_finished_with_a_last_frame() {
        let q = SystemQueue::new(100);
        q.try_push(frame(40)).unwrap(); // 49 bytes encoded
        q.try_push(frame(40)).unwrap();
        assert_eq!(q.try_push(frame(1)), Err(SendError::Full));
        assert_eq!(q.try_push(frame(200)), Err(SendError::TooLarge));
        let mut out = Vec::new();
        assert_eq!(q.pop_all(&mut out), Next::Open);
        assert_eq!(out.len(), 2);
        // Being written still counts.
        assert_eq!(q.try_push(frame(1)), Err(SendError::Full));
        q.written(98);
        assert_eq!(q.queued_bytes(), 0);
        q.try_push(frame(1)).unwrap();
        q.finish(Some(frame(2)));
        q.finish(None); // ignored
        assert_eq!(q.try_push(frame(1)), Err(SendError::NotConnected));
        out.clear();
        assert_eq!(q.pop_all(&mut out), Next::Finished(Some(frame(2))));
        assert_eq!(out, vec![frame(1)]);
    }
}
