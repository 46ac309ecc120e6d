//! sinew's peer and connection manager, sans-IO.
//!
//! [`PeerManager`] decides; the node does the I/O. It keeps exactly one active connection per
//! peer (dial coalescing, a duplicate rule both ends apply the same way without talking,
//! restart detection by boot nonce), keeps persistent peers connected with jittered exponential
//! backoff, enforces connection limits (total, inbound, outbound, pending handshakes, per IP),
//! pings established connections, closes idle, unresponsive and unauthorized ones, and drains
//! duplicates gracefully.
//!
//! # The sans-IO contract
//!
//! No sockets, tasks, locks, clock or global randomness: every input carries `now` (an
//! [`Instant`](std::time::Instant) the caller reads from its clock, or builds on virtual time),
//! and randomness (backoff jitter, ping nonces' start) comes from an RNG seeded at
//! construction. The same seed and inputs give the same outputs, in the same order; no
//! `HashMap` order is involved. Earlier `now` values than one already seen are read as the
//! latest, so deadlines never move backwards.
//!
//! # Call order
//!
//! The API has the shape of quinn-proto's:
//!
//! 1. **Getters** (`active_connection`, `connection`, `connected_peers`, `counts`, ...) can be
//!    called at any time.
//! 2. **Inputs**: commands (`dial`, `add_peer`, `remove_peer`, `authorize`, `shutdown`) and
//!    events (`inbound`, `handshake_succeeded`, `handshake_failed`, `dial_failed`,
//!    `connection_closed`, `disconnect_received`, `pong`, `activity`, `stream_opened`,
//!    `stream_closed`), each with the current time, as they happen.
//! 3. After every input, drain [`PeerManager::poll_action`] until it returns `None` and apply
//!    each [`Action`] in order.
//! 4. Then read [`PeerManager::poll_timeout`], arm one timer for it, and when it fires call
//!    [`PeerManager::handle_timeout`] with the current time and go back to 3.
//!
//! Every [`ConnId`] the manager hands out (from [`Action::Dial`] or
//! [`PeerManager::inbound`]) must be reported ended exactly once: `dial_failed` or
//! `handshake_failed` before its handshake completes, otherwise `connection_closed` (after a
//! [`Action::Close`] or [`Action::Drain`], or when its I/O ends on its own). Until then it
//! counts toward the limits. Inputs naming unknown or finished connections are ignored, so
//! late events from the network never panic.
//!
//! # Rules worth knowing
//!
//! - **One active connection per peer.** Duplicates (same boot nonce) are resolved the same way
//!   on both ends without a message: the connection dialled by the lower peer id wins, or with
//!   the same direction the lower session tag; the loser is drained. A new boot nonce means the
//!   peer restarted: the new connection replaces the old one with `PeerDisconnected(Restarted)`
//!   and a fresh `PeerConnected`. See [`PeerManager::handshake_succeeded`].
//! - **A peer is connected** from its `PeerConnected` to its `PeerDisconnected`
//!   ([`PeerManager::connected_peers`]). The `PeerDisconnected` of an active connection comes
//!   when the node reports it closed, with the reason the manager recorded when it asked to
//!   close it; if the remote drains it as a duplicate, the peer stays connected for up to the
//!   drain timeout while the successor completes its handshake.
//! - **Authorization belongs to the connected peer**: `authorize` covers the peer's current
//!   connection and any duplicate that replaces it; it ends with `PeerDisconnected`. The
//!   auth deadline runs from `PeerConnected` and a duplicate swap does not extend it.
//! - **Limits**: the per-IP limit counts inbound connections only (we choose our outbound
//!   ones); IPv4-mapped IPv6 addresses count as IPv4.
//! - **Backoff**: the jitter is applied after the cap; failures reset only after a connection
//!   stayed up `stable_after`; a limit refusal of a persistent dial counts as a failure.
//! - **Bounded state**: actions queue only what the last inputs produced (drain them after
//!   every input); at most [`MAX_ADDRS_PER_PEER`] addresses are kept per persistent peer.
//!   Deadlines are found by a scan over the connections, which is cheap at the default limit
//!   of 1024.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use sinew_peers::{Action, DialTicket, Established, PeerManager, PeersConfig};
//! use sinew_types::Direction;
//! use sinew_types::{Addr, Keypair};
//!
//! let local = Keypair::from_secret_bytes([1; 32]).peer_id();
//! let remote = Keypair::from_secret_bytes([2; 32]).peer_id();
//! let mut peers = PeerManager::new(local, PeersConfig::default(), 42)?;
//! let start = Instant::now(); // the node reads its clock; tests use virtual time
//!
//! // A dial: the manager allocates the connection and asks the node to dial.
//! let addr: Addr = format!("tcp://{remote}@192.0.2.7:4001").parse()?;
//! let DialTicket::Pending(conn) = peers.dial(addr.clone(), start)? else { unreachable!() };
//! assert_eq!(peers.poll_action(), Some(Action::Dial { conn, addr: addr.clone() }));
//! // A second request for the same peer shares the dial.
//! assert_eq!(peers.dial(addr.clone(), start)?, DialTicket::Pending(conn));
//!
//! // The node dialled and ran the handshake.
//! let now = start + Duration::from_millis(40);
//! let established = Established {
//!     peer: remote,
//!     direction: Direction::Outbound,
//!     remote_addr: addr.clone(),
//!     boot_nonce: 7,
//!     session_tag: [9; 32],
//! };
//! peers.handshake_succeeded(conn, established, now);
//! let direction = Direction::Outbound;
//! assert_eq!(peers.poll_action(), Some(Action::PeerConnected { peer: remote, conn, direction }));
//! assert_eq!(peers.poll_action(), Some(Action::DialSucceeded { conn, peer: remote }));
//! assert_eq!(peers.poll_action(), None);
//! assert_eq!(peers.dial(addr, now)?, DialTicket::Connected(remote));
//!
//! // The next deadline is the first ping.
//! let deadline = peers.poll_timeout().expect("a ping is scheduled");
//! assert_eq!(deadline, now + Duration::from_secs(15));
//! peers.handle_timeout(deadline);
//! assert!(matches!(peers.poll_action(), Some(Action::SendPing { conn: c, .. }) if c == conn));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod config;
mod conn;
mod limits;
mod manager;
mod types;

#[doc(hidden)]
pub mod fuzzing;

pub use config::{BackoffConfig, ConfigError, ConnectionLimits, PeersConfig};
pub use manager::PeerManager;
pub use manager::persistent::MAX_ADDRS_PER_PEER;
pub use types::{
    Action, ConnId, ConnState, ConnectionCounts, ConnectionView, DialFailure, DialTicket,
    Established, Reason, Refusal, RemoteDisconnect,
};
