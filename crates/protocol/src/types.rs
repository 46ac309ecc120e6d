//! What protocols receive: messages, peer information, reasons, and small value types.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sinew_codec::messages::{DisconnectCode, Identify};
use sinew_codec::{FrameKind, Opcode, OpcodeRange, Status};
use sinew_types::{Addr, Direction, PeerId};

/// The opcodes a protocol handles: a small set of ranges (possibly none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opcodes(Vec<OpcodeRange>);

impl Opcodes {
    /// No opcodes: the protocol only observes peers and timers.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Several ranges.
    pub fn ranges(ranges: impl IntoIterator<Item = OpcodeRange>) -> Self {
        Self(ranges.into_iter().collect())
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[OpcodeRange] {
        &self.0
    }

    /// Whether `opcode` is in one of the ranges.
    pub fn contains(&self, opcode: Opcode) -> bool {
        self.0.iter().any(|r| r.contains(opcode))
    }
}

impl From<OpcodeRange> for Opcodes {
    fn from(range: OpcodeRange) -> Self {
        Self(vec![range])
    }
}

impl From<Opcode> for Opcodes {
    fn from(opcode: Opcode) -> Self {
        Self(vec![OpcodeRange::single(opcode)])
    }
}

/// A message delivered to a protocol.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sent it.
    pub peer: PeerId,
    /// Its opcode.
    pub opcode: Opcode,
    /// Message, acked message, or request (responses go to [`crate::Protocol::on_response`]).
    pub kind: FrameKind,
    /// The payload (a slice of the receive buffer: no copy was made).
    pub payload: Bytes,
}

impl Message {
    /// The request id if this is a request (answer it with [`crate::Ctx::reply`]).
    pub fn request_id(&self) -> Option<u64> {
        match self.kind {
            FrameKind::Request { id } => Some(id),
            _ => None,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("peer", &self.peer)
            .field("opcode", &self.opcode)
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Whether a protocol took a message. An opcode nobody takes gets an error reply
/// ([`Status::UNKNOWN_OPCODE`]) from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The protocol handled it (an acked message is acknowledged now).
    Yes,
    /// Not for this protocol.
    No,
}

/// Identifies a request a protocol made with [`crate::Ctx::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The remote answered with an error status.
    #[error("remote error: {0}")]
    Remote(Status),
    /// No answer within the timeout.
    #[error("request timed out")]
    Timeout,
    /// The peer disconnected before answering.
    #[error("peer disconnected")]
    Disconnected,
}

/// The outcome of a request, delivered to [`crate::Protocol::on_response`].
#[derive(Debug, Clone)]
pub struct Response {
    /// Who was asked.
    pub peer: PeerId,
    /// Which request.
    pub id: RequestId,
    /// The request's opcode.
    pub opcode: Opcode,
    /// The response payload, or why there is none.
    pub result: Result<Bytes, RequestFailure>,
}

/// A timer a protocol set with [`crate::Ctx::set_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub u64);

/// What the node knows about a connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer: PeerId,
    /// Who dialled.
    pub direction: Direction,
    /// The peer's address as we see it.
    pub remote_addr: Addr,
    /// When the connection was established.
    pub connected_at: Instant,
    /// What the peer said about itself in identify, once it arrived.
    pub identity: Option<Arc<Identify>>,
    /// Whether the peer is authorized (see the node's access policy).
    pub authorized: bool,
}

impl PeerInfo {
    /// The role the peer announced in identify ("" until identify arrived).
    pub fn role(&self) -> &str {
        self.identity.as_ref().map_or("", |i| i.role.as_str())
    }
}

/// Why a peer disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// This node is shutting down.
    Shutdown,
    /// The application removed the peer.
    Removed,
    /// No application traffic for the idle timeout.
    Idle,
    /// Too many pings went unanswered.
    PingTimeout,
    /// The peer was not authorized in time.
    Unauthorized,
    /// The peer restarted; a new connection from it replaces the old one.
    Restarted,
    /// The peer broke the protocol (bad frame, oversize frame, stalled frame).
    ProtocolError(String),
    /// The peer closed the connection, saying why.
    Remote {
        /// The code it sent.
        code: DisconnectCode,
        /// Its message.
        message: String,
    },
    /// A protocol asked for the disconnect.
    Local(DisconnectCode),
    /// The connection broke (reset, EOF without a goodbye).
    ConnectionLost,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutdown"),
            Self::Removed => f.write_str("peer removed"),
            Self::Idle => f.write_str("idle timeout"),
            Self::PingTimeout => f.write_str("ping timeout"),
            Self::Unauthorized => f.write_str("not authorized in time"),
            Self::Restarted => f.write_str("peer restarted"),
            Self::ProtocolError(detail) => write!(f, "protocol error: {detail}"),
            Self::Remote { code, message } if message.is_empty() => {
                write!(f, "remote closed: {code}")
            }
            Self::Remote { code, message } => write!(f, "remote closed: {code} ({message})"),
            Self::Local(code) => write!(f, "closed locally: {code}"),
            Self::ConnectionLost => f.write_str("connection lost"),
        }
    }
}

/// Why a send did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The peer's outbound queue is full (backpressure). Try later or drop.
    #[error("the peer's outbound queue is full")]
    Full,
    /// The peer is not connected.
    #[error("peer not connected")]
    NotConnected,
    /// The payload is larger than the largest message (512 MiB).
    #[error("message too large")]
    TooLarge,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The peer is not authorized for application messages yet.
    #[error("peer not authorized")]
    Unauthorized,
    /// A large message's stream was reset before it was delivered: the receiver's budget was
    /// full, or the transfer was slower than the minimum rate.
    #[error("the large message was reset before it was delivered")]
    Reset,
    /// The peer was known but not connected, and dialling it failed.
    #[error("the peer is not connected, and dialling it failed: {0}")]
    Dial(DialFailure),
}

/// Why a dial failed, as senders and protocols learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// The address could not be reached (resolution, connection refused, unreachable).
    #[error("unreachable")]
    Unreachable,
    /// The dial or its handshake timed out.
    #[error("timed out")]
    Timeout,
    /// The security handshake failed.
    #[error("handshake failed")]
    Handshake,
    /// Another identity than the address names answered.
    #[error("another peer answered")]
    UnexpectedPeer,
    /// The address leads back to this node.
    #[error("the address is our own")]
    SelfConnection,
    /// No transport handles the address's scheme.
    #[error("no transport for the address")]
    UnsupportedScheme,
    /// The remote refused the connection for one of its limits.
    #[error("refused by the remote's limits")]
    Refused,
    /// One of our own connection limits refused the dial.
    #[error("refused by our own limits")]
    Limit,
    /// No address is known for the peer.
    #[error("no known address")]
    NoAddress,
    /// The connection closed before it could be used.
    #[error("closed during setup")]
    Closed,
}

/// A message travelling on a stream of its own (a large transfer), in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// An inbound large transfer that started: its header arrived, its body has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStart {
    /// Who sends it.
    pub peer: PeerId,
    /// Its id, for [`crate::Ctx::cancel_transfer`].
    pub id: TransferId,
    /// Its opcode (this protocol's).
    pub opcode: Opcode,
    /// The frame's length in bytes as its header claims it: the payload and at most 19 bytes
    /// of header and checksum. (A claim: the transfer is reset if its bytes do not come.)
    pub claimed: u64,
}

/// How a dial a protocol asked for ([`crate::Ctx::dial`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOutcome {
    /// The address dialled.
    pub addr: Addr,
    /// The peer reached, or why not.
    pub result: Result<PeerId, DialFailure>,
}

/// What a broadcast reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Peers the message was queued for.
    pub sent: Vec<PeerId>,
    /// Peers whose queue was full (the message was dropped for them and counted).
    pub full: Vec<PeerId>,
}

/// An event a protocol emitted with [`crate::Ctx::emit`]; applications receive it from the
/// node's event stream and downcast it.
#[derive(Clone)]
pub struct ProtocolEvent {
    /// The emitting protocol's name.
    pub protocol: &'static str,
    /// The event.
    pub event: Arc<dyn Any + Send + Sync>,
}

impl ProtocolEvent {
    /// The event as `T`, if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.event.downcast_ref()
    }
}

impl fmt::Debug for ProtocolEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolEvent").field("protocol", &self.protocol).finish_non_exhaustive()
    }
}
