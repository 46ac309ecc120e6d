//! The node's errors, split by operation.

use std::sync::Arc;

use sinew_codec::{OpcodeRange, Status};
use sinew_peers::Refusal;
use sinew_transport::ListenError;

pub use sinew_protocol::SendError;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("listen: {0}")]
    Listen(#[from] ListenError),
    /// Two protocols claim the same opcode.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why a protocol or handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another protocol already handles opcodes in this range.
    #[error("opcodes {range} are already handled by {owner}")]
    Overlap {
        /// The range asked for.
        range: OpcodeRange,
        /// The protocol that has it.
        owner: &'static str,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why a dial failed. Cloneable: concurrent dials to one peer share one attempt and its error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// A connection limit refused the dial.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The transport failed (connect, handshake, timeout...).
    #[error("{0}")]
    Transport(Arc<sinew_transport::DialError>),
    /// The connection closed before it could be used.
    #[error("connection closed during setup")]
    Closed,
    /// No address is known for the peer.
    #[error("no known address for the peer")]
    NoAddress,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be sent.
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// The remote answered with an error status.
    #[error("remote error: {0}")]
    Remote(Status),
    /// No response within the timeout.
    #[error("request timed out")]
    Timeout,
    /// The peer disconnected before answering.
    #[error("peer disconnected before answering")]
    Disconnected,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer is not connected.
    #[error("peer not connected")]
    NotConnected,
    /// Opening or writing the stream header failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The muxer refused.
    #[error(transparent)]
    Transport(#[from] sinew_transport::StreamError),
}
