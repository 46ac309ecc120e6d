//! What a host asks its driver to do, and tells its application.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, Opcode, Status};
use sinew_peers::{ConnId, Refusal};
use sinew_protocol::{ProtocolEvent, ProtocolId, Reason, TransferId};
use sinew_types::{Addr, Direction, PeerId};

/// Which of a connection's lanes a frame goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// The control stream: system frames, written before anything else.
    System,
    /// The message stream, taking turns with the application's queue (deficit round-robin).
    Message,
    /// A stream of its own (an application frame above the control-frame cap, or one a
    /// protocol sent with `Ctx::send_large`), named so it can be cancelled.
    Large(TransferId),
}

/// A frame to write on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection.
    pub conn: ConnId,
    /// Its lane.
    pub lane: Lane,
    /// The frame.
    pub frame: Frame,
}

/// An application ping, named by the host when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PingId(pub u64);

/// Why an application ping got no round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingFailure {
    /// No pong before the request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection closed first.
    #[error("disconnected")]
    Disconnected,
}

/// Something that happened, for the application's event stream.
#[derive(Debug, Clone)]
pub enum HostEvent {
    /// A peer connected (its first connection was established).
    PeerConnected {
        /// Who.
        peer: PeerId,
        /// Its address as we see it.
        addr: Addr,
        /// Who dialled.
        direction: Direction,
    },
    /// A peer's identify arrived.
    PeerIdentified {
        /// Who.
        peer: PeerId,
        /// Its role.
        role: String,
        /// Its agent string.
        agent: String,
        /// The addresses it listens on.
        listen_addrs: Vec<Addr>,
    },
    /// A peer disconnected (its last connection closed).
    PeerDisconnected {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: Reason,
    },
    /// An inbound connection was refused before its handshake.
    InboundRefused {
        /// The remote socket.
        remote: SocketAddr,
        /// Which limit.
        refusal: Refusal,
    },
    /// The remote answered a message that had no id with an error.
    RemoteError {
        /// Who.
        peer: PeerId,
        /// The opcode of the message it refused.
        opcode: Opcode,
        /// Why.
        status: Status,
    },
    /// A protocol panicked and was removed.
    ProtocolPanicked {
        /// Its name.
        protocol: &'static str,
        /// The panic's message.
        message: String,
    },
    /// A protocol emitted an event.
    Protocol(ProtocolEvent),
    /// The addresses this node advertises changed.
    AddressesChanged {
        /// The advertised addresses now.
        addrs: Vec<Addr>,
    },
}

/// What the driver must do, in the order the host decided it. Not `non_exhaustive`: a
/// driver handles every output, and a new one must break its build.
#[derive(Debug)]
pub enum Output {
    /// Write a frame (see [`Lane`]). System and protocol frames come within the connection's
    /// write credit ([`crate::Host::handle_write_credit`]).
    Transmit(Transmit),
    /// Dial `addr` for connection `conn`, and then, each after a short stagger (or at once
    /// when the one before failed), the `alternatives` (up to three of the peer's other recent
    /// addresses): keep the first that authenticates and drop the others. `addr` and the
    /// alternatives are in dialling order: QUIC, then TCP, then WebSocket, IPv6 and IPv4
    /// alternating within a transport. Report with `handle_established` or
    /// `handle_dial_failed`.
    Dial {
        /// The connection's id.
        conn: ConnId,
        /// Where first.
        addr: Addr,
        /// Where next, in order (with the peer's id).
        alternatives: Vec<Addr>,
    },
    /// Give up a dial or handshake in progress (the host already counts it closed).
    Abort {
        /// The pending connection.
        conn: ConnId,
    },
    /// Close an established connection, saying why; report its end with `handle_closed`.
    Close {
        /// The connection.
        conn: ConnId,
        /// The code its `DISCONNECT` carries.
        code: DisconnectCode,
        /// The reason text.
        message: String,
        /// Whether what was already queued is delivered first.
        graceful: bool,
    },
    /// A duplicate: close gracefully with `DUPLICATE` after what was already queued.
    Drain {
        /// The connection.
        conn: ConnId,
    },
    /// `conn` now carries `peer`'s application queue.
    Activate {
        /// The peer.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
    },
    /// `peer` has no connection any more: fail what waits on it; its application queue is
    /// closed unless `keep_queue` (a persistent peer, to be redialled).
    PeerGone {
        /// The peer.
        peer: PeerId,
        /// Whether its queue survives.
        keep_queue: bool,
    },
    /// The peer behind `conn` was authorized (frame size and read rate limits change).
    Authorized {
        /// The connection.
        conn: ConnId,
    },
    /// A dial succeeded (whoever waits on `conn` gets `peer`).
    DialSucceeded {
        /// The connection dialled.
        conn: ConnId,
        /// Who answered.
        peer: PeerId,
    },
    /// A dial failed for good (after its retries): whoever waits on `conn` gets its error.
    DialFailed {
        /// The connection dialled.
        conn: ConnId,
        /// The address.
        addr: Addr,
    },
    /// An application ping ended.
    PingDone {
        /// Which.
        id: PingId,
        /// Its round trip, or why there was none.
        result: Result<Duration, PingFailure>,
    },
    /// A response or error that no table of the host waited for: the application's.
    Response {
        /// Who answered.
        peer: PeerId,
        /// The request id.
        id: u64,
        /// The opcode of the answer.
        opcode: Opcode,
        /// The payload, or the remote's error status.
        result: Result<Bytes, Status>,
    },
    /// For the application's event stream.
    Event(HostEvent),
    /// A notice for the feed of `protocol` ([`sinew_protocol::Ctx::notify`]).
    Notice {
        /// The protocol.
        protocol: ProtocolId,
        /// What it said.
        notice: sinew_protocol::Erased,
    },
    /// Stop a large transfer (reset its stream), if it is still going.
    CancelTransfer {
        /// Which.
        transfer: TransferId,
    },
    /// `protocol` is gone (unregistered, or removed after a panic): its feed ends.
    ProtocolGone {
        /// The protocol.
        protocol: ProtocolId,
    },
}
