//! What a host is told when it is made: who it is, what it says in identify, and its bounds.

use std::time::Duration;

use sinew_codec::{DEFAULT_CONTROL_CAP, Opcode, OpcodeRange};
use sinew_types::PeerId;

/// What a peer that is not authorized may do. Authorization itself comes from
/// `PeersConfig::default_authorized` (everyone, by default) or an explicit authorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The opcodes an unauthorized peer may send us and we may send it. Default: keepalive
    /// (2, 3), ping and pong (10, 11), disconnect (14) and identify (19): every other block,
    /// rendezvous and gossip included, needs authorization. Anything else from it is answered
    /// `UNAUTHORIZED`; sending it anything else fails with `SendError::Unauthorized`.
    pub unauthorized_opcodes: Vec<OpcodeRange>,
    /// Whether an unauthorized peer may open raw, perf and large-message streams (default
    /// false: they are reset).
    pub unauthorized_streams: bool,
}

impl AccessPolicy {
    /// Whether an unauthorized peer may use `opcode`.
    pub fn allows_unauthorized(&self, opcode: Opcode) -> bool {
        self.unauthorized_opcodes.iter().any(|r| r.contains(opcode))
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        let one = OpcodeRange::single;
        Self {
            unauthorized_opcodes: vec![
                OpcodeRange::new(Opcode::KEEPALIVE, Opcode::KEEPALIVE_RESPONSE)
                    .unwrap_or(one(Opcode::KEEPALIVE)),
                OpcodeRange::new(Opcode::PING, Opcode::PONG).unwrap_or(one(Opcode::PING)),
                one(Opcode::DISCONNECT),
                one(Opcode::IDENTIFY),
            ],
            unauthorized_streams: false,
        }
    }
}

/// A host's settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node's identity.
    pub local: PeerId,
    /// The agent string identify announces.
    pub agent: String,
    /// The role identify announces.
    pub role: String,
    /// Random per process start; identify announces it, so peers tell a restart apart.
    pub boot_nonce: u64,
    /// What unauthorized peers may do.
    pub access: AccessPolicy,
    /// How long an application ping waits for its pong.
    pub request_timeout: Duration,
    /// Every how long each peer gets a `KEEPALIVE` (`None`: never).
    pub keepalive_interval: Option<Duration>,
    /// System-lane bytes per connection handed out and not yet reported written (the system
    /// lane's bound: an answer that does not fit closes the connection with `FLOODING`).
    pub system_lane_bytes: usize,
    /// Protocol frames (application opcodes) the host holds per peer before
    /// [`sinew_protocol::SendError::Full`].
    pub protocol_queue_bytes: usize,
    /// Protocol-frame bytes per peer handed to the driver and not yet reported written (the
    /// write credit: more waits in the host, where priorities still apply). Per peer: the
    /// driver keeps them in the peer's queue, which whichever connection carries the peer
    /// writes.
    pub protocol_credit_bytes: usize,
    /// Application frames with more payload than this go on a stream of their own.
    pub control_frame_cap: usize,
}

impl HostConfig {
    /// Defaults for everything but the identity.
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            agent: concat!("sinew/", env!("CARGO_PKG_VERSION")).into(),
            role: String::new(),
            boot_nonce: 0,
            access: AccessPolicy::default(),
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(20)),
            system_lane_bytes: 128 * 1024,
            protocol_queue_bytes: 1024 * 1024,
            protocol_credit_bytes: 256 * 1024,
            control_frame_cap: DEFAULT_CONTROL_CAP,
        }
    }
}
