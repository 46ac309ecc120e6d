//! sinew's protocol host, sans-IO: everything a node decides, and nothing it does.
//!
//! A [`Host`] routes frames to [`Protocol`](sinew_protocol::Protocol)s by opcode, answers
//! acked messages and unknown opcodes, keeps the request-id tables, runs protocol timers,
//! matches pings and pongs, keeps the address book and each peer's identify, applies the
//! access policy to unauthorized peers, and drives the peer manager ([`sinew_peers`]). It owns
//! no socket, task, channel or clock: its driver (the `sinew` node's, or the simulator's)
//! hands it what happened and asks it what to do, in the way quinn-proto is driven by quinn.
//!
//! # Call order
//!
//! 1. Make it with [`Host::new`] (the clock, the configuration, a seeded RNG), register
//!    protocols ([`Host::register`]), then [`Host::start`].
//! 2. Feed it whatever happens, each call with the current `now`:
//!    - connections: [`Host::handle_inbound`] (a socket arrived), [`Host::handle_established`]
//!      (a handshake finished), [`Host::handle_dial_failed`], [`Host::handle_handshake_failed`],
//!      [`Host::handle_goodbye`], [`Host::handle_closed`];
//!    - traffic: [`Host::handle_frame`], [`Host::handle_activity`], [`Host::handle_streams`],
//!      and [`Host::handle_write_credit`] when a writer wrote what the host handed it;
//!    - time: [`Host::handle_timeout`] once [`Host::poll_timeout`] has passed;
//!    - the application: [`Host::dial`], [`Host::dial_peer`], [`Host::add_peer`],
//!      [`Host::remove_peer`], [`Host::authorize`], [`Host::disconnect`], [`Host::ping`],
//!      [`Host::set_advertised`], [`Host::shutdown`].
//! 3. After each call, drain [`Host::poll_output`] until `None` and apply the [`Output`]s in
//!    order (frames to write, dials, closes, replies, events), then sleep until
//!    [`Host::poll_timeout`].
//!
//! Every input is applied to the end before the call returns: outputs never wait for another
//! input, and the same inputs give the same outputs (randomness comes only from the RNG the
//! host was given).
//!
//! # Write credit
//!
//! System frames and protocol frames leave the host within their credit: at most
//! `system_lane_bytes` of system frames per connection and `protocol_credit_bytes` of protocol
//! frames per peer are out and not reported written ([`Host::handle_write_credit`]; a frame the
//! driver could not queue is reported at once). A remote that
//! asks faster than it reads our answers overflows the system lane and is closed with
//! `FLOODING`; protocol frames beyond the credit wait in the host, per peer, bounded by
//! `protocol_queue_bytes` ([`sinew_protocol::SendError::Full`] beyond), so the driver's writer
//! takes them in turns with the application's own queue.
//!
//! ```
//! use std::time::Instant;
//! use rand_chacha::{ChaCha8Rng, rand_core::SeedableRng as _};
//! use sinew_host::{Host, HostConfig};
//! use sinew_peers::{PeerManager, PeersConfig};
//! use sinew_types::Keypair;
//!
//! let me = Keypair::generate_with(&mut ChaCha8Rng::seed_from_u64(1)).peer_id();
//! let now = Instant::now();
//! let peers = PeerManager::new(me, PeersConfig::default(), 7).unwrap();
//! let mut host = Host::new(HostConfig::new(me), peers, ChaCha8Rng::seed_from_u64(2), now);
//! host.start(now);
//! let ticket = host.dial("tcp://127.0.0.1:4001".parse().unwrap(), now).unwrap();
//! // The host asks its driver to dial; the driver reports the handshake's end.
//! assert!(matches!(host.poll_output(), Some(sinew_host::Output::Dial { .. })));
//! # let _ = ticket;
//! ```
#![forbid(unsafe_code)]

mod builtin;
mod config;
mod connections;
mod core;
mod dial_order;
mod dispatch;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod identify;
mod output;

pub use config::{AccessPolicy, HostConfig};
pub use core::OUTBOUND_TRANSFERS;
pub use host::{CallError, DialRefusal, Host, RegisterError};
pub use output::{HostEvent, Lane, Output, PingFailure, PingId, Transmit};

#[cfg(test)]
mod tests;
