//! Port mapping for sinew: asks the home gateway to forward external ports to this host, with
//! PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP IGD, and keeps the mappings alive.
//!
//! - [`natpmp`] and [`pcp`]: the two wire formats, ours and sans-IO: request encoders and
//!   response decoders as pure functions over byte slices, with typed results and errors
//!   (every result code is a variant of [`NatPmpError`] or [`PcpError`]). The decoders never
//!   panic. The module docs hold the byte tables.
//! - [`NatPmpClient`] and [`PcpClient`]: the same over UDP (tokio), retransmitting on the
//!   RFC schedule (250 ms, doubling) within a total timeout and ignoring stray datagrams.
//! - UPnP IGD through igd-next (used by the mapper; not exposed).
//! - [`PortMapper`]: the lifecycle. It probes the three methods in parallel, maps every
//!   requested (protocol, port) with the most preferred method that answered (only that
//!   one), renews at half the granted lifetime, maps everything again when the gateway
//!   restarts (NAT-PMP/PCP epoch checks), tracks the external address, detects a double NAT,
//!   and deletes its mappings on shutdown. Its decisions live in a sans-IO state machine
//!   driven by one tokio task; what happens comes out as [`NatEvent`]s on a bounded channel
//!   that never blocks the mapper, and [`PortMapper::state`] is a snapshot.
//! - [`default_gateway`]: the IPv4 default route's gateway from `/proc/net/route`.
//!
//! # I/O contract
//!
//! The wire modules do no I/O. [`PortMapper::start`] spawns one tokio task; all its sockets are
//! created inside that task (so a task running in a network namespace maps in that
//! namespace). It talks to UDP port 5351 of the gateway (NAT-PMP, PCP), SSDP multicast
//! 239.255.255.250:1900 and the gateway's HTTP control URL (UPnP). Every request is bounded
//! in time ([`PortMapperConfig::probe_timeout`], [`PortMapperConfig::request_timeout`]); a
//! failure becomes an event, never a panic. IPv4 only.
//!
//! # Example: the NAT-PMP wire format
//!
//! ```
//! use sinew_nat::natpmp::{NatPmpError, Request, Response};
//! use sinew_nat::MapProtocol;
//!
//! let request = Request::Map {
//!     protocol: MapProtocol::Tcp,
//!     internal_port: 4001,
//!     external_port: 4001,
//!     lifetime: 3600,
//! };
//! assert_eq!(request.encode(), [0, 2, 0, 0, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x0e, 0x10]);
//!
//! // The gateway's answer: version 0, opcode 130, result 0, epoch 7, ports, lifetime.
//! let answer = [0, 130, 0, 0, 0, 0, 0, 7, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x0e, 0x10];
//! assert_eq!(
//!     Response::decode(&answer)?,
//!     Response::Map {
//!         epoch: 7,
//!         protocol: MapProtocol::Tcp,
//!         internal_port: 4001,
//!         external_port: 4001,
//!         lifetime: 3600,
//!     }
//! );
//!
//! // Result code 2: not authorized.
//! let refused = [0, 130, 0, 2, 0, 0, 0, 7];
//! assert_eq!(
//!     Response::decode(&refused)?,
//!     Response::Failure { opcode: 2, epoch: 7, error: NatPmpError::NotAuthorized }
//! );
//! # Ok::<(), sinew_nat::natpmp::DecodeError>(())
//! ```
//!
//! # Example: keeping ports mapped
//!
//! ```no_run
//! use sinew_nat::{MapProtocol, NatEvent, PortMapper, PortMapperConfig};
//!
//! # async fn run() {
//! let (mapper, mut events) =
//!     PortMapper::start(PortMapperConfig::default(), vec![(MapProtocol::Tcp, 4001)]);
//! while let Some(event) = events.recv().await {
//!     if let NatEvent::Mapped { external: Some(address), .. } = event {
//!         println!("reachable at {address}");
//!         break;
//!     }
//! }
//! mapper.shutdown().await; // deletes the mapping
//! # }
//! ```
#![forbid(unsafe_code)]

mod client;
mod error;
mod lifecycle;
mod mapper;
pub mod natpmp;
pub mod pcp;
mod route;
mod types;
mod upnp;

pub use client::{INITIAL_RETRANSMIT, NatPmpClient, PcpClient, PcpGrant};
pub use error::{Error, UpnpError};
pub use mapper::{PortMapper, Stopped};
pub use natpmp::NatPmpError;
pub use pcp::PcpError;
pub use route::{default_gateway, parse_default_gateway};
pub use types::{
    ActiveMapping, MapProtocol, MappingMethod, MappingState, NatEvent, NatState, Phase,
    PortMapperConfig,
};

#[doc(hidden)]
pub mod fuzzing;
