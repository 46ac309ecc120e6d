//! The node's errors, split by operation.

use std::sync::Arc;

use sinew_codec::Status;
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
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The node's TLS certificate could not be made.
    #[cfg(feature = "tls")]
    #[error("TLS setup failed: {0}")]
    Tls(#[from] sinew_secure::TlsSetupError),
}

/// What is wrong with a [`NodeConfig`](crate::NodeConfig), field by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// A field is above what the protocol or the peers allow.
    #[error("{field} is {value}, above the largest allowed {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The most allowed.
        max: u64,
    },
    /// A field is below what the node needs.
    #[error("{field} is {value}, below the least allowed {min}")]
    TooSmall {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The least allowed.
        min: u64,
    },
    /// The peer manager's settings.
    #[error("peers: {0}")]
    Peers(#[from] sinew_peers::ConfigError),
    /// A transport is set to dial with a security this build of `sinew` leaves out (the
    /// `noise` or `tls` feature).
    #[error(
        "{field} asks to dial with {security}, which this build leaves out (feature `{feature}`)"
    )]
    SecurityNotBuilt {
        /// The field (`tcp.dial_tls`, `ws.dial_tls`).
        field: &'static str,
        /// The security it asks for (`Noise`, `TLS`).
        security: &'static str,
        /// The Cargo feature that builds it.
        feature: &'static str,
    },
}

pub use sinew_host::RegisterError;

/// Why a dial failed. Cloneable: concurrent dials to one peer share one attempt and its error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// One of our own connection limits refused the dial: nothing was sent.
    #[error("refused locally: {0}")]
    Limit(#[from] Refusal),
    /// The remote refused the connection before its handshake, for one of its limits (its
    /// advisory refusal record: unauthenticated, a hint).
    #[error("the remote refused the connection: {limit}")]
    Refused {
        /// Which limit.
        limit: sinew_transport::RefusedLimit,
        /// How long it advises waiting before trying again.
        retry_after: Option<std::time::Duration>,
    },
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

impl DialError {
    /// What kind of failure this is, as senders and protocols learn it.
    pub fn failure(&self) -> sinew_protocol::DialFailure {
        use sinew_protocol::DialFailure as F;
        match self {
            Self::Limit(_) => F::Limit,
            Self::Refused { .. } => F::Refused,
            Self::Transport(error) => match crate::driver::dial_failure(error) {
                sinew_peers::DialFailure::Timeout => F::Timeout,
                sinew_peers::DialFailure::Handshake => F::Handshake,
                sinew_peers::DialFailure::UnexpectedPeer => F::UnexpectedPeer,
                sinew_peers::DialFailure::SelfConnection => F::SelfConnection,
                sinew_peers::DialFailure::UnsupportedScheme => F::UnsupportedScheme,
                sinew_peers::DialFailure::Refused => F::Refused,
                _ => F::Unreachable,
            },
            Self::NoAddress => F::NoAddress,
            Self::Closed | Self::ShuttingDown => F::Closed,
        }
    }
}

/// The node has stopped: it takes no more commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node has stopped")]
pub struct Stopped;

/// Why a command about one peer did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The peer is not connected.
    #[error("the peer is not connected")]
    NotConnected,
    /// The peer is neither connected nor kept connected.
    #[error("the peer is neither connected nor kept")]
    Unknown,
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
