//! [`YamuxConfig`] and the yamux settings derived from it.

use std::time::Duration;

use sinew_transport::StreamLimits;

use crate::WindowBudget;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// yamux's initial (and guaranteed minimum) receive window per stream: 256 KiB.
pub const YAMUX_STREAM_WINDOW: usize = yamux::DEFAULT_CREDIT as usize;

/// The largest frame body a yamux peer accepts (yamux 0.14 refuses bodies over 1 MiB and kills
/// the connection), hence the ceiling on [`YamuxConfig::split_send_size`].
pub const MAX_SPLIT_SEND_SIZE: usize = MIB;

/// Streams yamux may hold beyond ours and those waiting in the inbound queue (see
/// [`YamuxConfig::yamux_max_streams`]).
pub const STREAM_SLACK: usize = 16;

/// yamux settings for one connection.
///
/// sinew counts streams itself ([`StreamLimits`], enforced by
/// [`MuxedConnection`](sinew_transport::MuxedConnection)); yamux's own stream limit and
/// connection window are derived from these fields ([`YamuxConfig::yamux_max_streams`],
/// [`YamuxConfig::yamux_window`]) so that yamux's limit is never the one that trips.
///
/// ```
/// use sinew_mux::YamuxConfig;
/// let config = YamuxConfig::default();
/// // 64 + 64 of ours, 32 queued, 16 of slack:
/// assert_eq!(config.yamux_max_streams(), 208);
/// // 208 streams x 256 KiB = 52 MiB guaranteed, plus 12 MiB for windows to grow into.
/// assert_eq!(config.yamux_window(), 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamuxConfig {
    /// Streams open at once per direction, enforced above yamux. Default 64 each way.
    pub limits: StreamLimits,
    /// Cap on the receive window of the whole connection (the sum of all stream windows), in
    /// bytes. It bounds how much a remote can make us buffer. Raised to
    /// [`YamuxConfig::yamux_max_streams`] x 256 KiB if lower, because yamux guarantees every
    /// stream its initial 256 KiB window (and asserts the cap covers it); what is left above that
    /// is the room auto-tuning may hand out to busy streams on high-latency links.
    /// Default 64 MiB: 52 MiB guaranteed under the default limits plus 12 MiB of growth. (With
    /// 64 streams each way yamux needs at least 32 MiB, whatever the slack.)
    pub max_connection_window: usize,
    /// Largest data frame yamux sends; larger writes are split. Default 256 KiB (yamux's own
    /// default of 16 KiB costs about 30% of throughput). Clamped to 1..=1 MiB, the largest frame
    /// a yamux peer accepts.
    pub split_send_size: usize,
    /// How much data of ordinary streams yamux may hold at once, not yet written below it
    /// (default 256 KiB): a writer waits while it holds that much. Priority streams (see
    /// `Stream::set_priority`) never wait, so no more than this plus one frame of other
    /// streams' data is ever ahead of their frames inside the muxer.
    pub write_queue: usize,
    /// Inbound streams the driver queues until `accept` takes them. When the queue is full a new
    /// inbound stream is reset at once and counted ([`YamuxStats::queue_full_resets`]).
    /// Default 64, the inbound stream limit; at least 1.
    ///
    /// The driver reads every frame that has arrived before the accepting task gets to run, so
    /// a peer opening many streams at once delivers them in one burst. With the queue as large
    /// as the inbound limit, a burst within the limit is never reset; streams over the limit
    /// are reset by the limit, exactly. An idle queue costs nothing whatever its capacity (a
    /// linked list of entries).
    ///
    /// [`YamuxStats::queue_full_resets`]: crate::YamuxStats::queue_full_resets
    pub inbound_queue: usize,
    /// How long a local close may take to flush and send yamux's GoAway before the socket is
    /// dropped anyway. Default 5 s.
    pub close_timeout: Duration,
    /// A node-wide cap on window growth: the connection's window is the guaranteed floor plus
    /// what this grants it at creation (see [`WindowBudget`]). `None`: each connection may grow
    /// to [`YamuxConfig::max_connection_window`].
    pub window_budget: Option<WindowBudget>,
}

impl Default for YamuxConfig {
    fn default() -> Self {
        Self {
            limits: StreamLimits::default(),
            max_connection_window: 64 * MIB,
            split_send_size: 256 * KIB,
            write_queue: 64 * KIB,
            inbound_queue: StreamLimits::default().inbound,
            close_timeout: Duration::from_secs(5),
            window_budget: None,
        }
    }
}

impl YamuxConfig {
    /// yamux's `max_num_streams`: `limits.outbound + limits.inbound + inbound_queue + 16`.
    ///
    /// yamux closes the whole connection when it would go over this number in either direction,
    /// so it must stay out of reach. Its stream table holds, besides the streams our
    /// [`StreamLimits`] count: the streams waiting in the inbound queue (not counted until
    /// accepted), one stream in the driver's hand and one in `accept`'s, and streams already
    /// dropped that yamux has not removed yet. yamux removes a dropped stream when its driver
    /// next runs, after sending what the stream had queued, and before it reads the next frame;
    /// the 16 of slack covers that lag. Saturates instead of overflowing.
    pub fn yamux_max_streams(&self) -> usize {
        self.limits
            .outbound
            .saturating_add(self.limits.inbound)
            .saturating_add(self.queue_capacity())
            .saturating_add(STREAM_SLACK)
            .min(usize::MAX / YAMUX_STREAM_WINDOW)
    }

    /// yamux's `max_connection_receive_window`: [`YamuxConfig::max_connection_window`], raised
    /// to [`YamuxConfig::yamux_max_streams`] x 256 KiB if lower (yamux's own requirement).
    pub fn yamux_window(&self) -> usize {
        self.max_connection_window.max(self.yamux_window_floor())
    }

    /// The window yamux guarantees a connection: [`YamuxConfig::yamux_max_streams`] x 256 KiB.
    pub fn yamux_window_floor(&self) -> usize {
        self.yamux_max_streams() * YAMUX_STREAM_WINDOW
    }

    /// [`YamuxConfig::split_send_size`] clamped to what a yamux peer accepts.
    pub fn yamux_split_send_size(&self) -> usize {
        self.split_send_size.clamp(1, MAX_SPLIT_SEND_SIZE)
    }

    /// [`YamuxConfig::inbound_queue`], at least 1.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.inbound_queue.max(1)
    }

    /// The yamux configuration. The setters assert `window >= streams x 256 KiB` at every call,
    /// so the window is lifted first, then the stream count set, then the window lowered to its
    /// final value, which [`YamuxConfig::yamux_window`] keeps at or above the floor.
    pub(crate) fn to_yamux(&self, window: usize) -> yamux::Config {
        let mut config = yamux::Config::default();
        config.set_max_connection_receive_window(None);
        config.set_max_num_streams(self.yamux_max_streams());
        config.set_max_connection_receive_window(Some(window.max(self.yamux_window_floor())));
        config.set_split_send_size(self.yamux_split_send_size());
        // Data that arrived before the connection ended stays readable.
        config.set_read_after_close(true);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_room_for_window_growth() {
        let config = YamuxConfig::default();
        assert_eq!(config.yamux_max_streams(), 64 + 64 + 64 + STREAM_SLACK);
        assert_eq!(config.yamux_window(), 64 * MIB);
        assert!(config.yamux_window() > config.yamux_max_streams() * YAMUX_STREAM_WINDOW);
        let _ = config.to_yamux(config.yamux_window());
    }

    #[test]
    fn a_low_window_cap_is_raised_to_yamux_floor() {
        let config = YamuxConfig { max_connection_window: MIB, ..YamuxConfig::default() };
        assert_eq!(config.yamux_window(), 208 * YAMUX_STREAM_WINDOW);
        let _ = config.to_yamux(config.yamux_window()); // yamux's assertions hold
    }

    #[test]
    fn extreme_settings_never_trip_yamux_assertions() {
        let huge = YamuxConfig {
            limits: StreamLimits { outbound: usize::MAX, inbound: usize::MAX },
            max_connection_window: 0,
            split_send_size: usize::MAX,
            write_queue: usize::MAX,
            inbound_queue: usize::MAX,
            close_timeout: Duration::ZERO,
            window_budget: None,
        };
        assert_eq!(huge.yamux_max_streams(), usize::MAX / YAMUX_STREAM_WINDOW);
        assert_eq!(huge.yamux_split_send_size(), MAX_SPLIT_SEND_SIZE);
        let _ = huge.to_yamux(huge.yamux_window());

        let tiny = YamuxConfig {
            limits: StreamLimits { outbound: 0, inbound: 0 },
            max_connection_window: 0,
            split_send_size: 0,
            write_queue: 0,
            inbound_queue: 0,
            close_timeout: Duration::ZERO,
            window_budget: None,
        };
        assert_eq!(tiny.queue_capacity(), 1);
        assert_eq!(tiny.yamux_split_send_size(), 1);
        assert_eq!(tiny.yamux_max_streams(), 1 + STREAM_SLACK);
        let _ = tiny.to_yamux(tiny.yamux_window());
    }
}
