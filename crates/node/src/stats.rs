//! Per-connection counters and the read rate limiter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sinew_peers::ConnId;
use tokio::sync::mpsc;

use crate::conn::{Activity, ConnEvent};

/// Application traffic is reported to the driver at most this often per connection.
const TRAFFIC_REPORT_MS: u64 = 1000;

/// Counters a connection's tasks update and `network_state` reads.
#[derive(Debug)]
pub(crate) struct ConnStats {
    epoch: Instant,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) msgs_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    /// Application streams open now (either direction).
    pub(crate) open_streams: AtomicUsize,
    /// When traffic was last reported to the driver (ms since `epoch`).
    last_report_ms: AtomicU64,
    /// Whether the peer is authorized (gates frame size and read rate).
    pub(crate) authorized: AtomicBool,
    /// Whether a task is waiting to report the stream count (at most one at a time).
    streams_report_pending: AtomicBool,
    /// Bytes the writers wrote of what the host handed them (system frames; protocol frames
    /// on the message lane), not yet reported: the host's write credit.
    system_written: AtomicU32,
    protocol_written: AtomicU32,
    /// Whether a report of written bytes is on its way to the driver (at most one).
    written_report_pending: AtomicBool,
    /// Where activity is reported (none in unit tests).
    notify: Option<(mpsc::Sender<ConnEvent>, ConnId)>,
}

impl ConnStats {
    pub(crate) fn new(
        epoch: Instant,
        authorized: bool,
        notify: Option<(mpsc::Sender<ConnEvent>, ConnId)>,
    ) -> Self {
        Self {
            last_report_ms: AtomicU64::new(0),
            notify,
            epoch,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            open_streams: AtomicUsize::new(0),
            authorized: AtomicBool::new(authorized),
            streams_report_pending: AtomicBool::new(false),
            system_written: AtomicU32::new(0),
            protocol_written: AtomicU32::new(0),
            written_report_pending: AtomicBool::new(false),
        }
    }

    /// Records application traffic now, telling the driver at most once a second.
    pub(crate) fn app_activity(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let reported = self.last_report_ms.load(Ordering::Relaxed);
        if ms.saturating_sub(reported) >= TRAFFIC_REPORT_MS
            && self
                .last_report_ms
                .compare_exchange(reported, ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Some((tx, conn)) = &self.notify
        {
            // Best effort: a later report covers a dropped one.
            let _ = tx.try_send(ConnEvent::Activity { conn: *conn, kind: Activity::Traffic });
        }
    }

    /// Tells the driver the stream count changed. A change that finds the channel full is
    /// handed to a task, at most one per connection: the driver reads the count when the report
    /// arrives, so one report covers every change made before it (the count stays exact, and a
    /// peer that opens and resets streams fast cannot make us spawn a task per stream).
    fn report_streams(self: &std::sync::Arc<Self>) {
        let Some((tx, conn)) = &self.notify else { return };
        let event = ConnEvent::Activity { conn: *conn, kind: Activity::Streams };
        if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event)
            && !self.streams_report_pending.swap(true, Ordering::AcqRel)
        {
            let tx = tx.clone();
            let stats = self.clone();
            tokio::spawn(async move {
                // Cleared before sending: a change after this point either finds the channel
                // free or starts the next task; one before it is covered by this report.
                stats.streams_report_pending.store(false, Ordering::Release);
                let _ = tx.send(event).await;
            });
        }
    }

    /// A writer wrote `bytes` of what the host handed this connection (`system`: on the
    /// control stream; else protocol frames on the message lane). One report at a time goes
    /// to the driver, which reads the counters when it handles it ([`ConnStats::take_written`]),
    /// so one report covers every write before it; a full channel hands it to a task (at most
    /// one per connection), since credit must never be lost.
    pub(crate) fn wrote(self: &std::sync::Arc<Self>, system: bool, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let counter = if system { &self.system_written } else { &self.protocol_written };
        // At most the host's credit (a few hundred KiB) is written between two reports.
        counter.fetch_add(u32::try_from(bytes).unwrap_or(u32::MAX), Ordering::AcqRel);
        if self.written_report_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some((tx, conn)) = &self.notify else { return };
        let event = ConnEvent::Activity { conn: *conn, kind: Activity::Written };
        if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(event).await;
            });
        }
    }

    /// The bytes written since the last call (system, protocol), for the host's credit. The
    /// next write reports again.
    pub(crate) fn take_written(&self) -> (usize, usize) {
        self.written_report_pending.store(false, Ordering::Release);
        let take = |counter: &AtomicU32| counter.swap(0, Ordering::AcqRel) as usize;
        (take(&self.system_written), take(&self.protocol_written))
    }

    /// Application streams open now.
    pub(crate) fn open_streams(&self) -> u32 {
        u32::try_from(self.open_streams.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    pub(crate) fn is_authorized(&self) -> bool {
        self.authorized.load(Ordering::Relaxed)
    }
}

/// Counts an application stream as open while alive.
#[derive(Debug)]
pub(crate) struct StreamGuard(std::sync::Arc<ConnStats>);

impl StreamGuard {
    pub(crate) fn new(stats: std::sync::Arc<ConnStats>) -> Self {
        stats.open_streams.fetch_add(1, Ordering::Relaxed);
        stats.app_activity();
        stats.report_streams();
        Self(stats)
    }

    pub(crate) fn stats(&self) -> &ConnStats {
        &self.0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.app_activity();
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.report_streams();
    }
}

/// A token bucket shared by a connection's readers: reading `n` bytes costs `n` tokens; when
/// the bucket is in debt the reader sleeps until it is paid off. Burst: a quarter second.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1);
        Self { rate, state: Mutex::new((rate as f64 / 4.0, Instant::now())) }
    }

    /// Charges `n` bytes; returns how long the reader must wait before reading on.
    fn charge(&self, n: usize) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let burst = self.rate as f64 / 4.0;
        let refill = now.duration_since(state.1).as_secs_f64() * self.rate as f64;
        state.0 = (state.0 + refill).min(burst) - n as f64;
        state.1 = now;
        if state.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.0 / self.rate as f64)
        }
    }

    /// Charges `n` bytes; if the rate requires a pause, returns it as a boxed sleep (boxed so
    /// that readers' state machines do not carry a timer while they are not throttled).
    pub(crate) fn throttle(&self, n: usize) -> Option<std::pin::Pin<Box<tokio::time::Sleep>>> {
        let wait = self.charge(n);
        (!wait.is_zero()).then(|| Box::pin(tokio::time::sleep(wait)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_charges_debt() {
        let limiter = RateLimiter::new(1000);
        assert_eq!(limiter.charge(100), Duration::ZERO, "within the burst");
        let wait = limiter.charge(1150);
        assert!(
            wait >= Duration::from_millis(990) && wait <= Duration::from_millis(1010),
            "{wait:?}"
        );
    }

    #[test]
    fn stream_guard_counts_and_marks_activity() {
        let stats = std::sync::Arc::new(ConnStats::new(
            Instant::now() - Duration::from_secs(1),
            true,
            None,
        ));
        let guard = StreamGuard::new(stats.clone());
        assert_eq!(guard.stats().open_streams.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(stats.open_streams.load(Ordering::Relaxed), 0);
    }
}
