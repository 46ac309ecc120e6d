//! Node settings, with the defaults a demanding user expects.

use std::time::Duration;

use sinew_codec::DEFAULT_CONTROL_CAP;
use sinew_peers::PeersConfig;
use sinew_tcp::TcpConfig;
use sinew_types::Addr;

/// Everything a node can be tuned by. Every queue's bound is here.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on at start.
    pub listen: Vec<Addr>,
    /// Connection limits, ping, idle, auth and drain deadlines, reconnect backoff.
    pub peers: PeersConfig,
    /// TCP transport: dial timeout, Noise suite and handshake timeout, yamux.
    pub tcp: TcpConfig,
    /// Largest frame on the control stream (1 MiB). Larger messages go on a stream of their own.
    pub control_frame_cap: usize,
    /// Largest frame an unauthorized peer may send (16 KiB).
    pub unauthorized_frame_cap: usize,
    /// Read rate allowed to an unauthorized peer, in bytes per second (64 KiB/s).
    pub unauthorized_rate: u64,
    /// Read rate limit per connection in bytes per second, for shaping (None: unlimited).
    pub recv_rate_limit: Option<u64>,
    /// Bytes of small frames queued per peer (8 MiB). When full, `send` waits and `try_send`
    /// returns `Full`.
    pub peer_queue_bytes: usize,
    /// Node-wide bytes of large messages in flight, each direction (1 GiB). A large message
    /// waits for its whole size to fit; one claiming more than the budget is refused.
    pub large_message_budget: usize,
    /// A partial frame that makes no progress for this long closes the connection (10 s).
    pub frame_stall_timeout: Duration,
    /// A write on a lane that makes no progress for this long closes the connection with
    /// `STALLED`: the remote stopped reading (20 s).
    pub write_stall_timeout: Duration,
    /// How long an accepted connection may take to open its control stream, and a dialled
    /// one to open ours (10 s).
    pub setup_timeout: Duration,
    /// How long a graceful close may take (finishing the lanes, the goodbye, the remote's
    /// FIN), and then closing the muxer (2 s each).
    pub close_grace: Duration,
    /// How long shutdown waits for connections to close before aborting them (3 s).
    pub shutdown_grace: Duration,
    /// Bytes of system frames (pongs, acks, error replies, identify, protocol control) queued
    /// per connection (64 KiB). An answer to the remote's request that does not fit closes the
    /// connection with `FLOODING`; a frame of our own that does not fit is refused (`Full`).
    pub system_lane_bytes: usize,
    /// Default timeout of `request` (30 s).
    pub request_timeout: Duration,
    /// Every this long the node sends a keepalive to each peer (20 s; None: never). Separate
    /// from the ping interval of `peers`, which measures liveness and RTT.
    pub keepalive_interval: Option<Duration>,
    /// Capacity of each application inbox, in messages (1024).
    pub inbox_capacity: usize,
    /// Capacity of the event stream (1024); slow subscribers skip events and are told how many.
    pub event_capacity: usize,
    /// Capacity of the command channel from `Node` handles to the driver (1024).
    pub command_capacity: usize,
    /// Capacity of the channel from connection tasks to the driver, in frames (4096).
    pub inbound_frame_capacity: usize,
    /// Port mapping (UPnP IGD, NAT-PMP, PCP) for the TCP listen ports: found external
    /// addresses are advertised in identify. None (the default): no port mapping.
    pub nat: Option<sinew_nat::PortMapperConfig>,
    /// Whether this node serves `sinew perf` throughput tests.
    pub perf_server: bool,
    /// Agent string sent in identify.
    pub agent: String,
    /// Role sent in identify (an open set; "node" by default).
    pub role: String,
    /// Seed of the node's RNG (protocol randomness, backoff jitter). Random if None.
    pub seed: Option<u64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            peers: PeersConfig::default(),
            tcp: TcpConfig::default(),
            control_frame_cap: DEFAULT_CONTROL_CAP,
            unauthorized_frame_cap: 16 * 1024,
            unauthorized_rate: 64 * 1024,
            recv_rate_limit: None,
            peer_queue_bytes: 8 * 1024 * 1024,
            large_message_budget: 1024 * 1024 * 1024,
            frame_stall_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(20),
            setup_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(3),
            system_lane_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(20)),
            inbox_capacity: 1024,
            event_capacity: 1024,
            command_capacity: 1024,
            inbound_frame_capacity: 4096,
            nat: None,
            perf_server: false,
            agent: concat!("sinew/", env!("CARGO_PKG_VERSION")).to_owned(),
            role: "node".to_owned(),
            seed: None,
        }
    }
}
