//! A protocol's feed to the application: bounded, dropping the oldest notice when full, and
//! telling the reader how many it dropped.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use sinew_protocol::Erased;

/// Notices a reader missed because it read too slowly (the oldest were dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} notices were dropped: the reader fell behind")]
pub struct Lagged(pub u64);

#[derive(Default)]
struct State {
    notices: VecDeque<Erased>,
    lagged: u64,
    closed: bool,
}

/// The queue between the driver (which pushes what the protocol notified) and the reader.
pub(crate) struct FeedQueue {
    state: Mutex<State>,
    waker: AtomicWaker,
    capacity: usize,
}

impl FeedQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), waker: AtomicWaker::new(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a notice; a full queue drops its oldest first (and counts it).
    pub(crate) fn push(&self, notice: Erased) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.notices.len() >= self.capacity {
            state.notices.pop_front();
            state.lagged += 1;
        }
        state.notices.push_back(notice);
        drop(state);
        self.waker.wake();
    }

    /// Ends the feed: the reader gets what is queued, then `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }
}

/// The notices a protocol feeds the application (see [`sinew_protocol::Commands`]), as a
/// [`futures::Stream`]: `Err(Lagged(n))` says `n` were dropped before the next one because the
/// reader fell behind (the feed holds [`crate::NodeConfig::feed_capacity`]); `None` once the
/// protocol is gone. A notice of another type than `T` is skipped.
pub struct Feed<T> {
    queue: Arc<FeedQueue>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Feed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("queued", &self.queue.lock().notices.len()).finish()
    }
}

impl<T: 'static> Feed<T> {
    pub(crate) fn new(queue: Arc<FeedQueue>) -> Self {
        Self { queue, _type: PhantomData }
    }

    /// The next notice (see the type's docs).
    pub async fn next(&mut self) -> Option<Result<T, Lagged>> {
        futures::StreamExt::next(self).await
    }
}

impl<T: 'static> futures::Stream for Feed<T> {
    type Item = Result<T, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let queue = &self.queue;
        queue.waker.register(cx.waker());
        let mut state = queue.lock();
        if state.lagged > 0 {
            let lagged = std::mem::take(&mut state.lagged);
            return Poll::Ready(Some(Err(Lagged(lagged))));
        }
        while let Some(notice) = state.notices.pop_front() {
            if let Ok(notice) = notice.downcast::<T>() {
                return Poll::Ready(Some(Ok(*notice)));
            }
        }
        if state.closed { Poll::Ready(None) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test]
    async fn drops_the_oldest_and_says_how_many() {
        let queue = Arc::new(FeedQueue::new(3));
        let mut feed = Feed::<u32>::new(queue.clone());
        for i in 0..5u32 {
            queue.push(Box::new(i));
        }
        queue.push(Box::new("another type"));
        assert_eq!(feed.next().await, Some(Err(Lagged(3))));
        assert_eq!(feed.next().await, Some(Ok(3)));
        assert_eq!(feed.next().await, Some(Ok(4)));
        queue.close();
        assert_eq!(feed.next().await, None, "the other type was skipped, then the end");
        queue.push(Box::new(9u32));
        assert_eq!(feed.next().await, None, "nothing after the end");
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_notice() {
        let queue = Arc::new(FeedQueue::new(8));
        let feed = Feed::<u32>::new(queue.clone());
        let reader = tokio::spawn(feed.take(2).collect::<Vec<_>>());
        tokio::task::yield_now().await;
        queue.push(Box::new(1u32));
        queue.push(Box::new(2u32));
        assert_eq!(reader.await.unwrap(), vec![Ok(1), Ok(2)]);
    }
}
