//! Byte budgets charged as bytes arrive: the node-wide budget for large messages being
//! received, with a share per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A number of bytes that charges draw from and give back. Never waits: a charge that does not
/// fit fails.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, used: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes in use now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one transfer holds of a node-wide budget and of its connection's share; given back
/// when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    node: Arc<ByteBudget>,
    share: Arc<ByteBudget>,
    held: usize,
}

/// Which budget a charge did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The connection's share.
    Share,
    /// The node-wide budget.
    Node,
}

impl Charge {
    pub(crate) fn new(node: Arc<ByteBudget>, share: Arc<ByteBudget>) -> Self {
        Self { node, share, held: 0 }
    }

    /// Charges `n` more bytes, to the share first, then to the node.
    pub(crate) fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        if !self.share.try_take(n) {
            return Err(Exhausted::Share);
        }
        if !self.node.try_take(n) {
            self.share.give_back(n);
            return Err(Exhausted::Node);
        }
        self.held += n;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.node.give_back(self.held);
        self.share.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_share_and_the_node_and_give_back_when_dropped() {
        let node = Arc::new(ByteBudget::new(100));
        let (a, b) = (Arc::new(ByteBudget::new(60)), Arc::new(ByteBudget::new(60)));
        let mut x = Charge::new(node.clone(), a.clone());
        x.grow(50).unwrap();
        assert_eq!(x.grow(11), Err(Exhausted::Share));
        let mut y = Charge::new(node.clone(), b.clone());
        y.grow(50).unwrap();
        assert_eq!(y.grow(1), Err(Exhausted::Node));
        assert_eq!((node.used(), a.used(), b.used()), (100, 50, 50));
        drop(x);
        assert_eq!((node.used(), a.used()), (50, 0));
        y.grow(10).unwrap();
        drop(y);
        assert_eq!((node.used(), b.used()), (0, 0));
    }
}
