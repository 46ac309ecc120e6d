//! The per-peer outbound queue: bounded by bytes, owned by the peer (not the connection), so a
//! connection swap loses nothing queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sinew_codec::Frame;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::SendError;

/// Bytes charged per queued frame beyond its encoded size, for the entry itself.
const ENTRY_OVERHEAD: usize = 64;

/// A bounded FIFO of frames for one peer.
///
/// Capacity is in bytes (encoded size plus a fixed per-entry overhead), held as semaphore
/// permits from push until the writer takes the frame. When full, [`PeerQueue::push`] waits and
/// [`PeerQueue::try_push`] returns [`SendError::Full`]. A frame larger than the whole budget
/// takes the whole budget. Closing the queue drops what it holds and fails every waiter.
///
/// One connection at a time writes the queue: its writer holds the queue's lane lease
/// ([`PeerQueue::lease`]) from its first frame until the remote confirmed it read the last one
/// (see `conn/messages.rs`), so two connections of one peer never interleave its frames.
pub(crate) struct PeerQueue {
    frames: Mutex<VecDeque<(Frame, u32)>>,
    /// Protocol frames the host handed this peer (bounded by its write credit), written by the
    /// same lease-holding writer, so a connection swap loses or reorders none of them.
    protocol: Mutex<VecDeque<Frame>>,
    budget: Semaphore,
    lane: Arc<Semaphore>,
    capacity: u32,
    writer: Notify,
    dropped: AtomicU64,
}

impl std::fmt::Debug for PeerQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerQueue")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

impl PeerQueue {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        let capacity =
            u32::try_from(capacity_bytes.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            frames: Mutex::new(VecDeque::new()),
            protocol: Mutex::new(VecDeque::new()),
            budget: Semaphore::new(capacity as usize),
            lane: Arc::new(Semaphore::new(1)),
            capacity,
            writer: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn cost(&self, frame: &Frame) -> u32 {
        let bytes = frame.encoded_len() + ENTRY_OVERHEAD;
        u32::try_from(bytes).unwrap_or(u32::MAX).min(self.capacity)
    }

    fn enqueue(&self, frame: Frame, cost: u32) {
        // Poisoning would need a panic while holding the lock; the critical sections below
        // cannot panic, so recover the guard either way.
        self.frames.lock().unwrap_or_else(|e| e.into_inner()).push_back((frame, cost));
        self.writer.notify_one();
    }

    /// Queues a frame, waiting for room.
    pub(crate) async fn push(&self, frame: Frame) -> Result<(), SendError> {
        let cost = self.cost(&frame);
        let permit = self.budget.acquire_many(cost).await.map_err(|_| SendError::NotConnected)?;
        permit.forget();
        self.enqueue(frame, cost);
        Ok(())
    }

    /// Queues a protocol frame (the host bounds them by its write credit) and wakes the writer.
    pub(crate) fn push_protocol(&self, frame: Frame) {
        self.protocol.lock().unwrap_or_else(|e| e.into_inner()).push_back(frame);
        self.writer.notify_one();
    }

    /// Whether frames (application or protocol) wait.
    pub(crate) fn has_pending(&self) -> bool {
        !self.frames.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            || !self.protocol.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Wakes the next writer if frames wait (a writer that stops leaves them for the next
    /// connection, whose wait may have missed their wake-up).
    pub(crate) fn wake_if_pending(&self) {
        if self.has_pending() {
            self.writer.notify_one();
        }
    }

    /// Puts back protocol frames a stopping writer took but did not write, ahead of the rest.
    pub(crate) fn unpop_protocol(&self, frames: VecDeque<Frame>) {
        if frames.is_empty() {
            return;
        }
        let mut protocol = self.protocol.lock().unwrap_or_else(|e| e.into_inner());
        for frame in frames.into_iter().rev() {
            protocol.push_front(frame);
        }
        drop(protocol);
        self.writer.notify_one();
    }

    /// Moves the queued protocol frames into `out`.
    pub(crate) fn pop_protocol(&self, out: &mut VecDeque<Frame>) {
        let mut protocol = self.protocol.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(protocol.drain(..));
        // Release the ring buffer: idle peers hold no queue memory.
        *protocol = VecDeque::new();
    }

    /// Queues a frame if there is room now.
    pub(crate) fn try_push(&self, frame: Frame) -> Result<(), SendError> {
        let cost = self.cost(&frame);
        match self.budget.try_acquire_many(cost) {
            Ok(permit) => {
                permit.forget();
                self.enqueue(frame, cost);
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(SendError::Full)
            }
            Err(TryAcquireError::Closed) => Err(SendError::NotConnected),
        }
    }

    /// Moves frames into `out` without going over `max_bytes` (but always at least one frame),
    /// returning their room to the budget.
    pub(crate) fn pop_batch(&self, max_bytes: usize, out: &mut Vec<Frame>) {
        let mut taken = 0usize;
        let mut released = 0u32;
        {
            let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
            while let Some((frame, _)) = frames.front() {
                let len = frame.encoded_len();
                if taken > 0 && taken + len > max_bytes {
                    break;
                }
                let Some((frame, cost)) = frames.pop_front() else { break };
                taken += len;
                released = released.saturating_add(cost);
                out.push(frame);
            }
            if frames.is_empty() {
                // Release the ring buffer: idle peers hold no queue memory.
                *frames = VecDeque::new();
            } else {
                self.writer.notify_one();
            }
        }
        self.budget.add_permits(released as usize);
    }

    /// Waits until no other connection writes this queue; `None` once the queue is closed.
    pub(crate) async fn lease(&self) -> Option<OwnedSemaphorePermit> {
        self.lane.clone().acquire_owned().await.ok()
    }

    /// Waits until a frame may be available.
    pub(crate) async fn ready(&self) {
        self.writer.notified().await;
    }

    /// Drops everything queued and fails current and future pushes.
    pub(crate) fn close(&self) {
        self.budget.close();
        self.lane.close();
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        self.dropped.fetch_add(frames.len() as u64, Ordering::Relaxed);
        frames.clear();
        self.protocol.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether [`PeerQueue::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.budget.is_closed()
    }

    /// Bytes queued now.
    pub(crate) fn queued_bytes(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.budget.available_permits())
    }

    /// Frames refused (full) or dropped (closed) so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sinew_codec::Opcode;
    use std::time::Duration;

    fn frame(len: usize) -> Frame {
        Frame::message(Opcode::from_u32(1000), Bytes::from(vec![0u8; len]))
    }

    #[tokio::test]
    async fn full_queue_refuses_try_push_and_push_waits_for_room() {
        let q = PeerQueue::new(1000);
        q.try_push(frame(500)).unwrap();
        assert_eq!(q.try_push(frame(500)), Err(SendError::Full));
        assert_eq!(q.dropped(), 1);
        let waiting = tokio::time::timeout(Duration::from_millis(50), q.push(frame(500)));
        assert!(waiting.await.is_err(), "push must wait while full");
        let mut out = Vec::new();
        q.pop_batch(usize::MAX, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(q.queued_bytes(), 0);
        q.push(frame(500)).await.unwrap();
    }

    #[tokio::test]
    async fn oversize_frames_take_the_whole_budget_and_batches_are_bounded() {
        let q = PeerQueue::new(1000);
        q.try_push(frame(5000)).unwrap();
        assert_eq!(q.queued_bytes(), 1000);
        let mut out = Vec::new();
        q.pop_batch(1, &mut out);
        for _ in 0..5 {
            q.try_push(frame(10)).unwrap();
        }
        out.clear();
        q.pop_batch(40, &mut out);
        assert_eq!(out.len(), 2, "stops once the batch passes max_bytes");
    }

    #[tokio::test]
    async fn close_fails_waiters_and_drops_frames() {
        let q = Arc::new(PeerQueue::new(100));
        q.try_push(frame(30)).unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push(frame(90)).await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), Err(SendError::NotConnected));
        assert_eq!(q.try_push(frame(1)), Err(SendError::NotConnected));
        let mut out = Vec::new();
        q.pop_batch(usize::MAX, &mut out);
        assert!(out.is_empty());
        assert!(q.is_closed());
    }
}
