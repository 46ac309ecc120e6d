//! [`QuicConfig`] and the quinn settings derived from it.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};
use sinew_transport::StreamLimits;

use crate::muxer::initial_stream_credit;

const MIB: u32 = 1024 * 1024;

/// QUIC transport settings. See the crate documentation for why the defaults are what they
/// are.
///
/// ```
/// use std::time::Duration;
/// use sinew_quic::QuicConfig;
/// let config = QuicConfig::default();
/// assert_eq!(config.max_idle_timeout, Duration::from_secs(60));
/// assert_eq!(config.keep_alive_interval, None);
/// assert_eq!(config.stream_receive_window, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// Bound on a whole dial: resolving the host and trying each resolved address in turn,
    /// handshakes included. Default 10 s.
    pub dial_timeout: Duration,
    /// Bound on one handshake (a dial's attempt at one address, or an accepted connection's
    /// [`upgrade`](sinew_transport::Incoming::upgrade)). Default 10 s.
    pub handshake_timeout: Duration,
    /// Streams open at once per direction, enforced by
    /// [`MuxedConnection`](sinew_transport::MuxedConnection). quinn's own limit is set above it
    /// ([`quinn_stream_limit`](crate::quinn_stream_limit)), which it reaches as streams are
    /// used ([`initial_stream_credit`](crate::initial_stream_credit)). Default 64 each way.
    pub limits: StreamLimits,
    /// QUIC's idle timeout: a connection on which nothing at all arrives for this long is
    /// dropped. A liveness bound above the node's keepalive (its pings keep a healthy
    /// connection busy), distinct from the node's application idle timeout. Default 60 s.
    /// Clamped to QUIC's maximum (about 2^62 ms).
    pub max_idle_timeout: Duration,
    /// QUIC PING frames sent when the connection is otherwise quiet. Default `None`: the node's
    /// own keepalive decides liveness.
    pub keep_alive_interval: Option<Duration>,
    /// How many bytes one stream may have in flight towards us, unread (QUIC stream flow
    /// control). Default 16 MiB, enough for a 1 Gbit/s path with 130 ms of round trip.
    pub stream_receive_window: u32,
    /// How many bytes all streams of a connection together may have in flight towards us
    /// (QUIC connection flow control): the bound on what one remote can make us buffer.
    /// Default 24 MiB: above one stream's window, so a bulk stream alone never blocks the
    /// control stream.
    pub receive_window: u32,
    /// How many bytes of ours quinn buffers per connection not yet acknowledged. Default 16 MiB.
    pub send_window: u64,
    /// The UDP socket's send buffer (`SO_SNDBUF`) asked for, in bytes. Default 4 MiB. The
    /// kernel may grant less (Linux caps it at `net.core.wmem_max`); what it granted is
    /// reported by [`QuicTransport::socket_buffers`](crate::QuicTransport::socket_buffers).
    /// `None` leaves the system default.
    pub socket_send_buffer: Option<usize>,
    /// The UDP socket's receive buffer (`SO_RCVBUF`) asked for, in bytes. Default 4 MiB (capped
    /// by `net.core.rmem_max` on Linux). `None` leaves the system default.
    pub socket_recv_buffer: Option<usize>,
    /// How long [`MuxedConnection::close`](sinew_transport::MuxedConnection::close) waits for
    /// quinn to report the connection closed. Default 1 s.
    pub close_timeout: Duration,
    /// With this many of a listener's handshakes in progress, a dialler whose address is not
    /// yet validated gets a stateless Retry first (one more round trip), so that datagrams
    /// from spoofed addresses, which never answer it, cannot take more pending-handshake slots
    /// than this. 0 validates every dialler. Default 8.
    pub validate_addresses_above: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            limits: StreamLimits::default(),
            max_idle_timeout: Duration::from_secs(60),
            keep_alive_interval: None,
            stream_receive_window: 16 * MIB,
            receive_window: 24 * MIB,
            send_window: 16 * u64::from(MIB),
            socket_send_buffer: Some(4 * MIB as usize),
            socket_recv_buffer: Some(4 * MIB as usize),
            close_timeout: Duration::from_secs(1),
            validate_addresses_above: 8,
        }
    }
}

impl QuicConfig {
    /// The quinn transport configuration for these settings (both sides use the same).
    ///
    /// Besides the fields above: no unidirectional streams (sinew uses none), no datagrams,
    /// and quinn's defaults for the rest, including generic segmentation offload (GSO, and GRO
    /// on receive), which stays on, and path MTU discovery.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(initial_stream_credit(self.limits)))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(
                IdleTimeout::try_from(self.max_idle_timeout)
                    .unwrap_or_else(|_| IdleTimeout::from(VarInt::MAX)),
            ))
            .keep_alive_interval(self.keep_alive_interval)
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window.max(self.stream_receive_window)))
            .send_window(self.send_window)
            .datagram_receive_buffer_size(None);
        Arc::new(transport)
    }
}
