//! The contract between sinew's transports and the node.
//!
//! A [`Transport`] dials and listens for one or more address schemes and hands out
//! [`Connection`]s that are already authenticated (the remote proved a [`PeerId`]) and
//! multiplexed ([`MuxedConnection`]). Above this crate nothing knows whether a connection is
//! TCP + Noise + yamux or QUIC.
//!
//! The [`MuxedConnection`] contract fits both yamux and QUIC:
//! - the opener of a stream writes first (the remote learns of a stream when data arrives);
//! - [`Stream::finish`] ends the sending half explicitly; dropping a [`Stream`] without finishing
//!   resets it;
//! - the number of open streams per direction is limited here ([`StreamLimits`]), because going
//!   over yamux's own limit kills the whole connection. Opening waits for a free slot; an inbound
//!   stream over the limit is reset and counted.
//!
//! ```
//! use sinew_transport::{Direction, StreamLimits};
//! let limits = StreamLimits::default();
//! assert_eq!(limits.outbound, 64);
//! assert_eq!(Direction::Outbound.to_string(), "outbound");
//! ```
#![forbid(unsafe_code)]

mod connection;
mod error;
mod muxed;
mod refusal;
pub mod resolve;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

pub use connection::{Connection, ConnectionInfo, Direction, NoiseSuite, Security};
pub use error::{
    CertificateError, DialError, HandshakeError, ListenError, StreamError, UpgradeError,
};
pub use muxed::{MuxedConnection, Muxer, Stream, StreamIo, StreamLimits};
pub use refusal::{Refused, RefusedLimit};
use sinew_types::{Addr, Scheme};

/// A boxed, sendable future: what the object-safe traits here return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to reach peers: dials and listens for some address schemes.
///
/// Implementations own their configuration (local identity, security choice, timeouts) and
/// return connections that are authenticated and multiplexed.
pub trait Transport: Send + Sync + 'static {
    /// The schemes this transport handles.
    fn schemes(&self) -> &'static [Scheme];

    /// Starts listening on `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    fn listen(&self, addr: Addr) -> BoxFuture<'static, Result<Box<dyn Listener>, ListenError>>;

    /// Dials `addr` (resolving a DNS host at every call), authenticates the remote (checking the
    /// expected peer id if the address carries one) and multiplexes the connection. The whole
    /// dial is bounded by the transport's dial and handshake timeouts.
    fn dial(&self, addr: Addr) -> BoxFuture<'static, Result<Connection, DialError>>;
}

/// A bound listener, producing [`Incoming`] connections.
pub trait Listener: Send + 'static {
    /// The address actually bound (with the real port when port 0 was asked for).
    fn local_addr(&self) -> Addr;

    /// Waits for the next accepted socket. The handshake has not started yet: the caller decides
    /// (connection limits) whether to run [`Incoming::upgrade`] or drop it.
    fn accept(&mut self) -> BoxFuture<'_, Result<Incoming, std::io::Error>>;
}

/// An accepted socket whose handshake has not run yet: [`Incoming::upgrade`] it, or
/// [`Incoming::refuse`] it. Dropping it closes the socket.
pub struct Incoming {
    /// The remote socket address.
    pub remote_addr: SocketAddr,
    /// The local socket address.
    pub local_addr: SocketAddr,
    pending: Box<dyn PendingConnection>,
}

/// What a transport does with an accepted socket (see [`Incoming`]).
pub trait PendingConnection: Send + 'static {
    /// Runs the security handshake and the muxer setup, bounded by the handshake timeout.
    fn upgrade(self: Box<Self>) -> BoxFuture<'static, Result<Connection, UpgradeError>>;
    /// Tells the dialler, as well as the protocol allows before any handshake, which limit
    /// refused it, then closes the socket. Bounded in time by the transport.
    fn refuse(self: Box<Self>, limit: RefusedLimit) -> BoxFuture<'static, ()>;
}

impl Incoming {
    /// An accepted socket from `remote_addr` on `local_addr`.
    pub fn new(
        remote_addr: SocketAddr,
        local_addr: SocketAddr,
        pending: impl PendingConnection,
    ) -> Self {
        Self { remote_addr, local_addr, pending: Box::new(pending) }
    }

    /// Runs the security handshake and the muxer setup, bounded by the handshake timeout.
    pub fn upgrade(self) -> BoxFuture<'static, Result<Connection, UpgradeError>> {
        self.pending.upgrade()
    }

    /// Refuses the connection for `limit` (see [`PendingConnection::refuse`]).
    pub fn refuse(self, limit: RefusedLimit) -> BoxFuture<'static, ()> {
        self.pending.refuse(limit)
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("remote_addr", &self.remote_addr)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}
