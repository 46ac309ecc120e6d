//! sinew: the events an endpoint hands one connection, in a queue that releases its memory
//! when it empties. quinn used a tokio unbounded channel, which allocates its first block (32
//! events of about 200 bytes, 6.5 KiB) when it is made and keeps it for the connection's life,
//! idle or not. Boxing the events instead cost an allocation per datagram, which slowed bulk
//! transfers by a tenth. Here a burst of events grows a `VecDeque`, and the receiver releases
//! it once it has drained more than [`KEEP`] of them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// The most events' room kept when the queue empties; a larger buffer is released.
const KEEP: usize = 4;

struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

fn lock<T>(state: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Every critical section leaves the state consistent: a panic inside one cannot corrupt it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queue with one sender and one receiver (the endpoint and the connection).
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let state = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (Sender(state.clone()), Receiver(state))
}

/// The endpoint's end.
pub(crate) struct Sender<T>(Arc<Mutex<State<T>>>);

impl<T> Sender<T> {
    /// Queues `value` and wakes the receiver; gives it back if the receiver is gone.
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = lock(&self.0);
            if state.receiver_gone {
                return Err(value);
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The connection's end.
pub(crate) struct Receiver<T>(Arc<Mutex<State<T>>>);

impl<T> Receiver<T> {
    /// The next event; `None` once the queue is empty and the sender gone.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.0);
        if let Some(value) = state.queue.pop_front() {
            return Poll::Ready(Some(value));
        }
        if state.queue.capacity() > KEEP {
            state.queue = VecDeque::new();
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut state = lock(&self.0);
            state.receiver_gone = true;
            std::mem::take(&mut state.queue)
        };
        drop(queued); // outside the lock
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
