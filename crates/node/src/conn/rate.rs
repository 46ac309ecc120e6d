//! Minimum transfer rates over sliding windows, so that a peer cannot hold a budget, a buffer
//! or a queue by moving a byte now and then.

use std::time::Duration;

use tokio::time::Instant;

/// Checks that a transfer keeps up `min_rate` bytes per second over every window of at least
/// `window` (not on average since its start: an early burst buys nothing later).
///
/// Once a window has passed, the transfer must have moved `min_rate` bytes for every second of
/// it, or all that was left of it, whichever is less; then a new window starts. Time spent
/// waiting on our own limits ([`RateWindow::excuse`]) is not held against the remote, up to half
/// of each window (a remote that keeps our shared limiter busy with its other traffic cannot
/// excuse a stalled transfer forever). The clock is an input (`now`), so the arithmetic is
/// tested without one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateWindow {
    window: Duration,
    min_rate: u64,
    start: Instant,
    moved_at_start: u64,
    /// Time excused in the current window.
    excused: Duration,
}

impl RateWindow {
    /// A check starting at `now`, with `moved` bytes already moved (they earn no credit).
    pub(crate) fn new(min_rate: u64, window: Duration, now: Instant, moved: u64) -> Self {
        Self {
            window,
            min_rate: min_rate.max(1),
            start: now,
            moved_at_start: moved,
            excused: Duration::ZERO,
        }
    }

    /// Records that `moved` bytes have moved in all, of `total` (`u64::MAX`: unknown). Returns
    /// whether the transfer fell below the rate in the window that just ended.
    pub(crate) fn too_slow(&mut self, now: Instant, moved: u64, total: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < self.window {
            return false;
        }
        let quota = (self.min_rate as f64 * elapsed.as_secs_f64()) as u64;
        let required = quota.min(total.saturating_sub(self.moved_at_start));
        let slow = moved.saturating_sub(self.moved_at_start) < required;
        self.restart(now, moved);
        slow
    }

    /// Starts over at `now` (the transfer was idle on purpose, e.g. nothing to send).
    pub(crate) fn restart(&mut self, now: Instant, moved: u64) {
        self.start = now;
        self.moved_at_start = moved;
        self.excused = Duration::ZERO;
    }

    /// Time the transfer spent waiting on us (our own rate limit), not on the remote: the
    /// window is moved on by it, up to half a window's worth per window.
    pub(crate) fn excuse(&mut self, waited: Duration) {
        let waited = waited.min((self.window / 2).saturating_sub(self.excused));
        self.excused += waited;
        self.start += waited;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_must_keep_up_the_rate() {
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut rate = RateWindow::new(1000, window, t0, 0);
        // An early burst: fine in the first window.
        assert!(!rate.too_slow(t0 + window, 1_000_000, 2_000_000));
        // Then a trickle: the burst does not pay for the next window.
        assert!(rate.too_slow(t0 + 2 * window, 1_000_001, 2_000_000));
        // What is left may be less than the quota: moving it all is enough.
        let mut tail = RateWindow::new(1000, window, t0, 0);
        assert!(!tail.too_slow(t0 + window, 500, 500));
        // A long wait is judged by its length: 15 s need 15 s of the rate.
        let mut long = RateWindow::new(1000, window, t0, 0);
        assert!(long.too_slow(t0 + Duration::from_secs(15), 14_000, u64::MAX));
        // Within a window, nothing is judged.
        let mut early = RateWindow::new(1000, window, t0, 0);
        assert!(!early.too_slow(t0 + Duration::from_secs(5), 0, u64::MAX));
    }

    #[test]
    fn bytes_moved_before_the_start_earn_nothing() {
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut rate = RateWindow::new(1000, window, t0, 50_000);
        assert!(rate.too_slow(t0 + window, 50_000 + 9_999, u64::MAX));
        let mut rate = RateWindow::new(1000, window, t0, 50_000);
        assert!(!rate.too_slow(t0 + window, 50_000 + 10_000, u64::MAX));
    }

    #[test]
    fn our_own_waits_are_excused() {
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut rate = RateWindow::new(1000, window, t0, 0);
        // 4 s of the 10 were spent in our throttle: 6 s of real time, not yet a window.
        rate.excuse(Duration::from_secs(4));
        assert!(!rate.too_slow(t0 + window, 0, u64::MAX));
        // From the moved start, a whole window later, the rate is owed again.
        assert!(rate.too_slow(t0 + Duration::from_secs(14), 9_999, u64::MAX));
        // At most half a window is excused per window: waits beyond it count.
        let mut capped = RateWindow::new(1000, window, t0, 0);
        capped.excuse(Duration::from_secs(8));
        capped.excuse(Duration::from_secs(8));
        assert!(capped.too_slow(t0 + Duration::from_secs(15), 0, u64::MAX), "5 s excused, not 16");
    }
}
