//! The values that cross the manager's boundary: identifiers, inputs, outputs and views.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sinew_types::{Addr, Direction, PeerId};

/// One connection, from the moment it is dialled or accepted until the node reports its end.
///
/// Allocated by the [`PeerManager`](crate::PeerManager) in increasing order and never reused,
/// so a stale id can never name a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The id as a number (for logs and metrics).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// What [`dial`](crate::PeerManager::dial) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialTicket {
    /// The peer is already connected: send to it, nothing was dialled.
    Connected(PeerId),
    /// The dial in progress that will reach the peer: either a new one (an
    /// [`Action::Dial`] was queued) or an existing one this request shares. Wait for
    /// [`Action::DialSucceeded`] or [`Action::DialFailed`] with this id.
    Pending(ConnId),
}

/// What a completed handshake established; the input of
/// [`handshake_succeeded`](crate::PeerManager::handshake_succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The identity the remote proved.
    pub peer: PeerId,
    /// Who dialled. The manager trusts the direction it recorded when the connection was dialled
    /// or accepted; this field is informational.
    pub direction: Direction,
    /// The remote's address.
    pub remote_addr: Addr,
    /// The remote process's boot nonce: a new one from a connected peer means it restarted.
    pub boot_nonce: u64,
    /// A value both ends compute identically (the handshake hash); breaks ties between
    /// duplicate connections the same way on both sides.
    pub session_tag: [u8; 32],
}

/// Why a dial failed, as the node reports it to
/// [`dial_failed`](crate::PeerManager::dial_failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialFailure {
    /// The address could not be reached (resolution, connection refused, unreachable).
    Unreachable,
    /// The dial or its handshake timed out.
    Timeout,
    /// The security handshake failed.
    Handshake,
    /// The remote proved another identity than the address names.
    UnexpectedPeer,
    /// The address is our own: a persistent address without a peer id that leads back to us is
    /// forgotten instead of redialled.
    SelfConnection,
    /// No transport handles the address's scheme.
    UnsupportedScheme,
    /// The listener refused the connection for one of its limits.
    Refused,
}

/// What a remote's Disconnect frame said, as the node reports it to
/// [`disconnect_received`](crate::PeerManager::disconnect_received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteDisconnect {
    /// The remote drains this connection as a duplicate of another one to us.
    Duplicate,
    /// The remote closes the connection for any other reason.
    Other,
}

/// Why a connection was closed or a peer disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The local node shuts down.
    Shutdown,
    /// Another connection to the same peer process was kept instead of this one.
    Duplicate,
    /// No application traffic and no open stream for the idle timeout.
    Idle,
    /// Too many pings in a row went unanswered.
    PingTimeout,
    /// The connection was not authorized within the auth timeout.
    Unauthorized,
    /// A connection from the restarted peer replaced this one.
    Replaced,
    /// The peer restarted (a new boot nonce): the old session ended.
    Restarted,
    /// The peer was removed locally.
    Removed,
    /// The handshake proved another identity than expected (or our own).
    UnexpectedPeer,
    /// The connection ended without the manager asking (I/O error, reset, EOF).
    ConnectionLost,
    /// The remote closed the connection (it sent a Disconnect frame).
    Remote,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shutdown => "shutdown",
            Self::Duplicate => "duplicate connection",
            Self::Idle => "idle",
            Self::PingTimeout => "ping timeout",
            Self::Unauthorized => "not authorized in time",
            Self::Replaced => "replaced by a connection from the restarted peer",
            Self::Restarted => "peer restarted",
            Self::Removed => "peer removed",
            Self::UnexpectedPeer => "unexpected peer identity",
            Self::ConnectionLost => "connection lost",
            Self::Remote => "closed by the remote",
        })
    }
}

/// An output of the manager, drained with [`poll_action`](crate::PeerManager::poll_action).
///
/// Commands (`Dial`, `Close`, `Drain`, `SendPing`) ask the node to do I/O; events
/// (`PeerConnected`, `PeerDisconnected`, `ConnectionReplaced`, `DialSucceeded`, `DialFailed`)
/// tell it and its protocols what happened. Apply them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Dial `addr`; report the result with `handshake_succeeded`, `handshake_failed` or
    /// `dial_failed` for `conn`.
    Dial {
        /// The new connection.
        conn: ConnId,
        /// Where to dial (with the expected peer id when known).
        addr: Addr,
    },
    /// Close the connection (abort it if it is still dialling or in its handshake) and report
    /// `connection_closed` when its I/O has ended.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why; also the reason of the `PeerDisconnected` that follows for an active connection.
        reason: Reason,
    },
    /// Drain a duplicate: send a Disconnect(duplicate) frame after what is already queued on
    /// it, keep reading until the remote finishes, then report `connection_closed`. If that takes
    /// longer than the drain timeout the manager emits `Close` with [`Reason::Duplicate`].
    Drain {
        /// The connection.
        conn: ConnId,
    },
    /// Send a ping carrying `nonce`; report the matching pong with `pong`.
    SendPing {
        /// The connection.
        conn: ConnId,
        /// The nonce the pong must echo.
        nonce: u64,
    },
    /// The peer is connected; `conn` is its active connection.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its active connection.
        conn: ConnId,
        /// Who dialled it.
        direction: Direction,
    },
    /// The peer is no longer connected. Its protocols' state should start over.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: Reason,
    },
    /// The peer stays connected, but through `new` instead of `old`: move the peer's outbound
    /// queue to `new`. No `PeerDisconnected`/`PeerConnected` is emitted for this swap.
    ConnectionReplaced {
        /// The peer.
        peer: PeerId,
        /// The connection that was active (now draining or closed).
        old: ConnId,
        /// The new active connection.
        new: ConnId,
    },
    /// The dial `conn` reached `peer`, which is now connected (through `conn` or, if `conn`
    /// turned out to be a duplicate, through another connection).
    DialSucceeded {
        /// The dial.
        conn: ConnId,
        /// The peer it reached.
        peer: PeerId,
    },
    /// The dial `conn` to `addr` failed or was cancelled.
    DialFailed {
        /// The dial.
        conn: ConnId,
        /// The address it dialled.
        addr: Addr,
    },
}

/// The life cycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// Dialling or in its handshake.
    Pending,
    /// Established: the peer's active connection.
    Established,
    /// Draining as a duplicate (or because the remote drains it).
    Draining,
    /// The manager asked the node to close it and waits for `connection_closed`.
    Closing,
}

/// A snapshot of one connection, from [`connection`](crate::PeerManager::connection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionView {
    /// The remote peer: the expected one while an outbound dial is pending (if the address
    /// named one), the proven one once established, `None` for a pending inbound connection.
    pub peer: Option<PeerId>,
    /// Who dialled.
    pub direction: Direction,
    /// Where the connection is in its life cycle.
    pub state: ConnState,
    /// Whether it is its peer's active connection.
    pub active: bool,
    /// The remote address: the dialled one, or once established the one the handshake reported.
    pub remote_addr: Option<Addr>,
    /// The accepted socket's remote address (inbound only).
    pub remote_socket: Option<SocketAddr>,
    /// When the handshake completed.
    pub established_at: Option<Instant>,
    /// The remote process's boot nonce, once established.
    pub boot_nonce: Option<u64>,
    /// The last measured ping round-trip time.
    pub rtt: Option<Duration>,
    /// Whether the connection is authorized.
    pub authorized: bool,
    /// Consecutive unanswered pings.
    pub missed_pings: u32,
    /// Open application streams.
    pub open_streams: u32,
}

/// How many connections count toward each limit; see
/// [`ConnectionLimits`](crate::ConnectionLimits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// All connections the node has not reported closed.
    pub total: usize,
    /// Inbound ones.
    pub inbound: usize,
    /// Outbound ones.
    pub outbound: usize,
    /// Those whose handshake has not completed or failed (both directions).
    pub pending_handshakes: usize,
    /// Of which inbound.
    pub pending_inbound: usize,
    /// Of which outbound.
    pub pending_outbound: usize,
}

/// Why the manager refused a new connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The total connection limit is reached.
    #[error("connection limit reached ({limit} connections)")]
    Total {
        /// The configured limit.
        limit: usize,
    },
    /// The inbound connection limit is reached.
    #[error("inbound connection limit reached ({limit} connections)")]
    Inbound {
        /// The configured limit.
        limit: usize,
    },
    /// The outbound connection limit is reached.
    #[error("outbound connection limit reached ({limit} connections)")]
    Outbound {
        /// The configured limit.
        limit: usize,
    },
    /// Too many handshakes are in progress in this direction.
    #[error("pending {direction} handshake limit reached ({limit} handshakes)")]
    PendingHandshakes {
        /// Which direction's limit.
        direction: Direction,
        /// The configured limit.
        limit: usize,
    },
    /// Too many handshakes in progress from this IP address (or IPv6 /64).
    #[error("pending handshake limit reached for {ip} ({limit} handshakes)")]
    PendingPerIp {
        /// The remote address (an IPv6 /64 network as its first address).
        ip: IpAddr,
        /// The configured limit.
        limit: usize,
    },
    /// Too many connections from this IP address.
    #[error("per-IP connection limit reached for {ip} ({limit} connections)")]
    PerIp {
        /// The remote IP address.
        ip: IpAddr,
        /// The configured limit.
        limit: usize,
    },
    /// The manager is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The address names our own peer id.
    #[error("the address names the local peer")]
    LocalPeer,
}
