//! A node-wide cap on the growth of yamux's auto-tuned receive windows.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of receive-window growth shared by every connection that uses it.
///
/// yamux guarantees each stream its initial 256 KiB window and lets busy streams grow theirs,
/// up to the connection's cap. That cap is per connection; this budget bounds the sum of what
/// the caps allow above the guaranteed windows, across all connections. Each new connection
/// takes at most a quarter of what is left (and at most what its own settings ask), and gives
/// it back when it ends; yamux 0.14 cannot resize a window once the connection exists, so the
/// grant is fixed at creation.
#[derive(Clone)]
pub struct WindowBudget {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    used: AtomicUsize,
}

impl WindowBudget {
    /// A budget of `bytes` of window growth.
    pub fn new(bytes: usize) -> Self {
        Self { inner: Arc::new(Inner { capacity: bytes, used: AtomicUsize::new(0) }) }
    }

    /// Bytes not granted to any connection now.
    pub fn available(&self) -> usize {
        self.inner.capacity.saturating_sub(self.inner.used.load(Ordering::Acquire))
    }

    /// Grants up to `wanted` bytes: at most a quarter of what is left.
    pub(crate) fn grant(&self, wanted: usize) -> WindowGrant {
        let mut granted = 0;
        let _ = self.inner.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let left = self.inner.capacity.saturating_sub(used);
            granted = wanted.min(left / 4);
            Some(used + granted)
        });
        WindowGrant { budget: self.clone(), bytes: granted }
    }
}

impl fmt::Debug for WindowBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowBudget")
            .field("capacity", &self.inner.capacity)
            .field("available", &self.available())
            .finish()
    }
}

impl PartialEq for WindowBudget {
    /// The same budget (not an equal one).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for WindowBudget {}

/// What one connection holds of a [`WindowBudget`]; given back when dropped.
pub(crate) struct WindowGrant {
    budget: WindowBudget,
    pub(crate) bytes: usize,
}

impl Drop for WindowGrant {
    fn drop(&mut self) {
        self.budget.inner.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_take_a_quarter_of_what_is_left_and_come_back() {
        let budget = WindowBudget::new(4 << 20);
        let a = budget.grant(20 << 20);
        assert_eq!(a.bytes, 1 << 20);
        let b = budget.grant(512 << 10);
        assert_eq!(b.bytes, 512 << 10, "a connection takes no more than it asks");
        assert_eq!(budget.available(), (4 << 20) - (1 << 20) - (512 << 10));
        drop(a);
        drop(b);
        assert_eq!(budget.available(), 4 << 20);
    }
}
