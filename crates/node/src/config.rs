//! Node settings, with the defaults a demanding user expects.

use std::time::Duration;

use sinew_codec::messages::{MAX_AGENT, MAX_ROLE};
use sinew_codec::{CHECKSUM_LEN, DEFAULT_CONTROL_CAP, MAX_HEADER, SYSTEM_FRAME_CAP};

use crate::error::ConfigError;
use sinew_peers::PeersConfig;
#[cfg(feature = "tcp")]
use sinew_tcp::TcpConfig;
use sinew_types::Addr;

/// Everything a node can be tuned by. Every queue's bound is here.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on at start.
    pub listen: Vec<Addr>,
    /// Connection limits, ping, idle, auth and drain deadlines, reconnect backoff.
    pub peers: PeersConfig,
    /// TCP transport: dial timeout, Noise suite and handshake timeout, yamux, and whether to
    /// dial with TLS. The memory transport borrows its Noise and yamux settings.
    #[cfg(feature = "tcp")]
    pub tcp: TcpConfig,
    /// WebSocket transport (`ws://`, `wss://`): as TCP, plus the WebSocket limits and the wss
    /// certificate and roots.
    #[cfg(feature = "ws")]
    pub ws: sinew_ws::WsConfig,
    /// QUIC transport (`quic://`): timeouts, stream limits, windows, UDP buffers, QUIC's own
    /// idle timeout (a liveness bound above `keepalive_interval`, apart from
    /// `peers.idle_timeout`).
    #[cfg(feature = "quic")]
    pub quic: sinew_quic::QuicConfig,
    /// Application messages with larger payloads than this go on a stream of their own with
    /// the `LARGE` flag (1 MiB, the most a message stream carries: every receiver accepts it).
    pub control_frame_cap: usize,
    /// The slowest the lanes may move (16 KiB/s): a partial frame must arrive at this rate, and
    /// our message writer, while it has frames to write, must get them out at this rate over
    /// every window of `frame_stall_timeout`; otherwise the connection is closed (a protocol
    /// error, or `STALLED`). So a peer cannot hold a 1 MiB partial frame, or keep our queue
    /// full, by moving a byte now and then.
    pub lane_min_rate: u64,
    /// What an unauthorized peer may do.
    pub access: AccessPolicy,
    /// Largest frame an unauthorized peer may send (16 KiB).
    pub unauthorized_frame_cap: usize,
    /// Read rate allowed to an unauthorized peer, in bytes per second (64 KiB/s).
    pub unauthorized_rate: u64,
    /// Read rate limit per connection in bytes per second, for shaping (None: unlimited).
    pub recv_rate_limit: Option<u64>,
    /// Node-wide bytes by which yamux's auto-tuned receive windows may grow beyond their
    /// guaranteed 256 KiB per stream, across all connections (256 MiB; each new connection
    /// takes at most a quarter of what is left, up to its own cap). Used by every transport
    /// whose `mux.window_budget` is not set (if `tcp.mux.window_budget` is, the others share
    /// that one).
    pub mux_window_budget: usize,
    /// Bytes of small frames queued per peer (8 MiB). When full, `send` waits and `try_send`
    /// returns `Full`.
    pub peer_queue_bytes: usize,
    /// Node-wide bytes of large messages in flight, each direction (1 GiB + 128 KiB: two
    /// connections' shares, so two largest messages always fit together and transfers that
    /// compete for the rest cannot all be refused). Receiving, it is
    /// charged as bytes arrive (never from a claimed length) and stays charged until the
    /// application drops the payload: a message whose next bytes do not fit is reset and
    /// dropped (`DropReason::BudgetExhausted`). Sending, a message waits
    /// for its whole size to fit (`send`), or `try_send` returns `Full`.
    pub large_message_budget: usize,
    /// The most one connection may hold of the receive budget at once (512 MiB + 64 KiB: one
    /// largest message).
    pub large_message_share: usize,
    /// The slowest a large message may travel, either way (256 KiB/s): in every window of
    /// `frame_stall_timeout` it must move this rate's worth of bytes (or all that is left), or
    /// it is reset (`DropReason::TooSlow` when receiving, `SendError::Reset` when sending), so
    /// trickled claims cannot hold budgets.
    pub large_min_rate: u64,
    /// A partial frame that makes no progress for this long closes the connection (10 s).
    pub frame_stall_timeout: Duration,
    /// A write on a lane that makes no progress for this long closes the connection with
    /// `STALLED`: the remote stopped reading (20 s).
    pub write_stall_timeout: Duration,
    /// How long an accepted connection may take to open its control stream, and a dialled
    /// one to open ours (10 s).
    pub setup_timeout: Duration,
    /// When a peer has several known addresses, the next is dialled this long after the one
    /// before (or at once when it failed); the first that authenticates is kept (250 ms).
    pub dial_stagger: Duration,
    /// How long a graceful close may take (finishing the lanes, the goodbye, the remote's
    /// FIN), and then closing the muxer (2 s each).
    pub close_grace: Duration,
    /// How long shutdown waits for connections to close before aborting them (3 s).
    pub shutdown_grace: Duration,
    /// Bytes of system frames (pongs, acks, error replies, identify, protocol control) queued
    /// per connection (128 KiB: at least one largest system frame, 64 KiB of payload). An answer to the remote's request that does not fit closes the
    /// connection with `FLOODING`; a frame of our own that does not fit is refused (`Full`).
    pub system_lane_bytes: usize,
    /// Default timeout of `request` (30 s).
    pub request_timeout: Duration,
    /// Every this long the node sends a keepalive to each peer (20 s; None: never). Separate
    /// from the ping interval of `peers`, which measures liveness and RTT.
    pub keepalive_interval: Option<Duration>,
    /// Capacity of each application inbox, in messages (1024).
    pub inbox_capacity: usize,
    /// Bytes of message-lane payloads an application inbox holds (64 MiB): past it, messages
    /// are refused as when the inbox is full (a message is always taken into an empty inbox).
    /// Large messages are bounded by `large_message_budget` instead.
    pub inbox_bytes: usize,
    /// Capacity of the event stream (1024); slow subscribers skip events and are told how many.
    pub event_capacity: usize,
    /// Notices each protocol feed holds for a slow reader before dropping the oldest
    /// (see `Node::register_with_handle`).
    pub feed_capacity: usize,
    /// Capacity of the command channel from `Node` handles to the driver (1024).
    pub command_capacity: usize,
    /// Capacity of the channel from connection tasks to the driver, in frames (4096).
    pub inbound_frame_capacity: usize,
    /// Port mapping (UPnP IGD, NAT-PMP, PCP) for the TCP listen ports: found external
    /// addresses are advertised in identify. None (the default): no port mapping.
    pub nat: Option<sinew_nat::PortMapperConfig>,
    /// Whether this node serves `sinew perf` throughput tests (off: a perf stream is reset).
    /// Only authorized peers may run them, within [`NodeConfig::perf_limits`].
    pub perf_server: bool,
    /// Bounds on each throughput test this node serves.
    pub perf_limits: PerfLimits,
    /// Agent string sent in identify.
    pub agent: String,
    /// Role sent in identify (an open set; "node" by default).
    pub role: String,
    /// Seed of the node's RNG (protocol randomness, backoff jitter). Random if None.
    pub seed: Option<u64>,
}

pub use sinew_host::AccessPolicy;

/// Bounds on each throughput test a node serves: an attacker chooses the lengths it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfLimits {
    /// Most bytes a test may upload, and most it may ask to download (4 GiB each). A larger
    /// request is refused (the stream is reset).
    pub max_bytes: u64,
    /// Longest a test may take, upload and download together (60 s); then it is reset.
    pub max_duration: Duration,
}

impl Default for PerfLimits {
    fn default() -> Self {
        Self { max_bytes: 4 << 30, max_duration: Duration::from_secs(60) }
    }
}

impl NodeConfig {
    /// Checks every field; [`crate::NodeBuilder::start`] calls this. The limits the node
    /// encodes with match those peers decode with, so a valid configuration never makes it send
    /// what its peers must refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("frame_stall_timeout", self.frame_stall_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("setup_timeout", self.setup_timeout),
            ("close_grace", self.close_grace),
            ("shutdown_grace", self.shutdown_grace),
            ("request_timeout", self.request_timeout),
            ("keepalive_interval", self.keepalive_interval.unwrap_or(Duration::MAX)),
            ("perf_limits.max_duration", self.perf_limits.max_duration),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Zero { field });
        }
        let counts = [
            ("control_frame_cap", self.control_frame_cap),
            ("unauthorized_frame_cap", self.unauthorized_frame_cap),
            ("peer_queue_bytes", self.peer_queue_bytes),
            ("large_message_budget", self.large_message_budget),
            ("large_message_share", self.large_message_share),
            ("inbox_capacity", self.inbox_capacity),
            ("inbox_bytes", self.inbox_bytes),
            ("event_capacity", self.event_capacity),
            ("feed_capacity", self.feed_capacity),
            ("command_capacity", self.command_capacity),
            ("inbound_frame_capacity", self.inbound_frame_capacity),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Zero { field });
        }
        if self.unauthorized_rate == 0 {
            return Err(ConfigError::Zero { field: "unauthorized_rate" });
        }
        #[cfg(feature = "tcp")]
        dial_security_built("tcp.dial_tls", self.tcp.dial_tls)?;
        #[cfg(feature = "ws")]
        dial_security_built("ws.dial_tls", self.ws.dial_tls)?;
        if self.lane_min_rate == 0 {
            return Err(ConfigError::Zero { field: "lane_min_rate" });
        }
        if self.large_min_rate == 0 {
            return Err(ConfigError::Zero { field: "large_min_rate" });
        }
        if self.recv_rate_limit == Some(0) {
            return Err(ConfigError::Zero { field: "recv_rate_limit" });
        }
        let at_most = [
            // Every receiver accepts 1 MiB on a message stream; larger goes as LARGE.
            ("control_frame_cap", self.control_frame_cap, DEFAULT_CONTROL_CAP),
            ("unauthorized_frame_cap", self.unauthorized_frame_cap, SYSTEM_FRAME_CAP),
            ("agent", self.agent.len(), MAX_AGENT),
            ("role", self.role.len(), MAX_ROLE),
        ];
        for (field, value, max) in at_most {
            if value > max {
                return Err(ConfigError::TooLarge { field, value: value as u64, max: max as u64 });
            }
        }
        // The system lane must hold the largest system frame. (A peer queue smaller than a
        // frame is fine: such a frame takes the whole queue.)
        let min = SYSTEM_FRAME_CAP + MAX_HEADER + CHECKSUM_LEN;
        if self.system_lane_bytes < min {
            return Err(ConfigError::TooSmall {
                field: "system_lane_bytes",
                value: self.system_lane_bytes as u64,
                min: min as u64,
            });
        }
        self.peers.validate()?;
        Ok(())
    }
}

/// Whether the security a transport is set to dial with (`dial_tls`: TLS, else Noise) is built.
#[allow(dead_code)] // unused when neither tcp nor ws is built
fn dial_security_built(field: &'static str, dial_tls: bool) -> Result<(), ConfigError> {
    let (security, feature, built) = if dial_tls {
        ("TLS", "tls", cfg!(feature = "tls"))
    } else {
        ("Noise", "noise", cfg!(feature = "noise"))
    };
    if built { Ok(()) } else { Err(ConfigError::SecurityNotBuilt { field, security, feature }) }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            peers: PeersConfig::default(),
            // Dial with a security this node has, whatever features other crates of the build
            // turned on in sinew-tcp and sinew-ws (Cargo unifies them).
            #[cfg(feature = "tcp")]
            tcp: TcpConfig { dial_tls: !cfg!(feature = "noise"), ..TcpConfig::default() },
            #[cfg(feature = "ws")]
            ws: sinew_ws::WsConfig { dial_tls: !cfg!(feature = "noise"), ..Default::default() },
            #[cfg(feature = "quic")]
            quic: sinew_quic::QuicConfig::default(),
            control_frame_cap: DEFAULT_CONTROL_CAP,
            lane_min_rate: 16 * 1024,
            access: AccessPolicy::default(),
            unauthorized_frame_cap: 16 * 1024,
            unauthorized_rate: 64 * 1024,
            recv_rate_limit: None,
            mux_window_budget: 256 * 1024 * 1024,
            peer_queue_bytes: 8 * 1024 * 1024,
            large_message_budget: 2 * (sinew_codec::MAX_MESSAGE + 64 * 1024),
            large_message_share: sinew_codec::MAX_MESSAGE + 64 * 1024,
            large_min_rate: 256 * 1024,
            frame_stall_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(20),
            setup_timeout: Duration::from_secs(10),
            dial_stagger: Duration::from_millis(250),
            close_grace: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(3),
            system_lane_bytes: 128 * 1024,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(20)),
            inbox_capacity: 1024,
            inbox_bytes: 64 << 20,
            event_capacity: 1024,
            feed_capacity: 1024,
            command_capacity: 1024,
            inbound_frame_capacity: 4096,
            nat: None,
            perf_server: false,
            perf_limits: PerfLimits::default(),
            agent: concat!("sinew/", env!("CARGO_PKG_VERSION")).to_owned(),
            role: "node".to_owned(),
            seed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default dials with a security this build has; asking for one it left out is a
    /// typed error at start, not a dial that fails every time.
    #[cfg(feature = "tcp")]
    #[test]
    fn dialling_with_a_security_left_out_is_refused() {
        let config = NodeConfig::default();
        assert_eq!(config.tcp.dial_tls, !cfg!(feature = "noise"));
        for dial_tls in [false, true] {
            let mut config = NodeConfig::default();
            config.tcp.dial_tls = dial_tls;
            let built = [cfg!(feature = "noise"), cfg!(feature = "tls")][usize::from(dial_tls)];
            match config.validate() {
                Ok(()) => assert!(built, "dial_tls {dial_tls}"),
                Err(ConfigError::SecurityNotBuilt { field: "tcp.dial_tls", .. }) => {
                    assert!(!built, "dial_tls {dial_tls}");
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    /// One case per invalid field: each is refused with its typed error, and the defaults pass.
    #[test]
    fn every_invalid_field_is_refused_with_its_error() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
        type Case = (fn(&mut NodeConfig), ConfigError);
        let zero = |field| ConfigError::Zero { field };
        let cases: Vec<Case> = vec![
            (|c| c.frame_stall_timeout = Duration::ZERO, zero("frame_stall_timeout")),
            (|c| c.write_stall_timeout = Duration::ZERO, zero("write_stall_timeout")),
            (|c| c.setup_timeout = Duration::ZERO, zero("setup_timeout")),
            (|c| c.close_grace = Duration::ZERO, zero("close_grace")),
            (|c| c.shutdown_grace = Duration::ZERO, zero("shutdown_grace")),
            (|c| c.request_timeout = Duration::ZERO, zero("request_timeout")),
            (|c| c.keepalive_interval = Some(Duration::ZERO), zero("keepalive_interval")),
            (|c| c.perf_limits.max_duration = Duration::ZERO, zero("perf_limits.max_duration")),
            (|c| c.control_frame_cap = 0, zero("control_frame_cap")),
            (|c| c.unauthorized_frame_cap = 0, zero("unauthorized_frame_cap")),
            (|c| c.peer_queue_bytes = 0, zero("peer_queue_bytes")),
            (|c| c.large_message_budget = 0, zero("large_message_budget")),
            (|c| c.inbox_capacity = 0, zero("inbox_capacity")),
            (|c| c.inbox_bytes = 0, zero("inbox_bytes")),
            (|c| c.event_capacity = 0, zero("event_capacity")),
            (|c| c.command_capacity = 0, zero("command_capacity")),
            (|c| c.inbound_frame_capacity = 0, zero("inbound_frame_capacity")),
            (|c| c.unauthorized_rate = 0, zero("unauthorized_rate")),
            (|c| c.large_message_share = 0, zero("large_message_share")),
            (|c| c.large_min_rate = 0, zero("large_min_rate")),
            (|c| c.lane_min_rate = 0, zero("lane_min_rate")),
            (|c| c.recv_rate_limit = Some(0), zero("recv_rate_limit")),
            (
                |c| c.control_frame_cap = DEFAULT_CONTROL_CAP + 1,
                ConfigError::TooLarge {
                    field: "control_frame_cap",
                    value: DEFAULT_CONTROL_CAP as u64 + 1,
                    max: DEFAULT_CONTROL_CAP as u64,
                },
            ),
            (
                |c| c.unauthorized_frame_cap = SYSTEM_FRAME_CAP + 1,
                ConfigError::TooLarge {
                    field: "unauthorized_frame_cap",
                    value: SYSTEM_FRAME_CAP as u64 + 1,
                    max: SYSTEM_FRAME_CAP as u64,
                },
            ),
            (
                |c| c.agent = "a".repeat(MAX_AGENT + 1),
                ConfigError::TooLarge { field: "agent", value: 129, max: 128 },
            ),
            (
                |c| c.role = "r".repeat(MAX_ROLE + 1),
                ConfigError::TooLarge { field: "role", value: 65, max: 64 },
            ),
            (
                |c| c.system_lane_bytes = 1024,
                ConfigError::TooSmall {
                    field: "system_lane_bytes",
                    value: 1024,
                    min: (SYSTEM_FRAME_CAP + MAX_HEADER + CHECKSUM_LEN) as u64,
                },
            ),
            (
                |c| c.peers.max_missed_pings = 0,
                ConfigError::Peers(sinew_peers::ConfigError::ZeroMissedPings),
            ),
        ];
        for (break_it, expected) in cases {
            let mut config = NodeConfig::default();
            break_it(&mut config);
            assert_eq!(config.validate(), Err(expected.clone()), "{expected}");
        }
    }
}
