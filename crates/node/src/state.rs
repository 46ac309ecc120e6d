//! `network_state()`: what the node is connected to, and how much has moved.

use std::time::Duration;

use sinew_transport::Security;
use sinew_types::{Addr, Direction, PeerId};

/// A snapshot of the node's network.
#[derive(Debug, Clone)]
pub struct NetworkState {
    /// This node.
    pub local: PeerId,
    /// Addresses it listens on.
    pub listen_addrs: Vec<Addr>,
    /// Connected peers, sorted by peer id.
    pub peers: Vec<PeerState>,
    /// Connections in any state (pending, established, draining).
    pub connections: usize,
    /// Of which inbound.
    pub inbound: usize,
    /// Of which outbound.
    pub outbound: usize,
    /// Handshakes in progress.
    pub pending_handshakes: usize,
    /// Requests, acked sends and pings waiting for their answer (applications' and
    /// protocols').
    pub pending_requests: usize,
    /// Bytes of large messages being received now, charged against the node's budget.
    pub large_receive_bytes: usize,
    /// Port mapping state, when it is on.
    pub nat: Option<sinew_nat::NatState>,
}

/// One connected peer.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// Who.
    pub peer: PeerId,
    /// Its address as we see it (the scheme says the transport).
    pub addr: Addr,
    /// How the connection is secured (Noise and its suite, or TLS 1.3).
    pub security: Option<Security>,
    /// Who dialled.
    pub direction: Direction,
    /// Its role from identify ("" before identify).
    pub role: String,
    /// Its agent from identify.
    pub agent: String,
    /// The addresses it listens on, from identify.
    pub listen_addrs: Vec<Addr>,
    /// The last measured round-trip time.
    pub rtt: Option<Duration>,
    /// Bytes received on the connection (control stream and streams).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames received.
    pub msgs_in: u64,
    /// Frames sent.
    pub msgs_out: u64,
    /// Time since the peer connected.
    pub age: Duration,
    /// Whether it is authorized.
    pub authorized: bool,
    /// Bytes waiting in its outbound queue.
    pub queued_bytes: usize,
    /// Frames refused because its queue was full, or dropped when it closed.
    pub dropped: u64,
}
