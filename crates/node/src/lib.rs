//! sinew: a peer-to-peer networking stack.
//!
//! A [`Node`] listens and dials over TCP, authenticates every connection to an Ed25519
//! [`PeerId`] with Noise XX, multiplexes it with yamux, and exchanges opcode-framed messages of
//! up to 512 MiB. One driver task runs the peer manager and every [`Protocol`] (ping, keepalive,
//! identify, yours); one task per connection does its I/O. Every queue is bounded: `send`
//! waits, `try_send` returns [`SendError::Full`], inboxes answer `BUSY`, and slow event
//! subscribers are told what they missed.
#![cfg_attr(
    feature = "tcp",
    doc = r#"
```
# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
use bytes::Bytes;
use sinew::{Event, Keypair, Node, Opcode};

let server = Node::builder(Keypair::generate()).listen("tcp://127.0.0.1:0".parse()?).start().await?;
let mut requests = server.inbox(Opcode::app(1000)?).await?;
tokio::spawn({
    let server = server.clone();
    async move {
        while let Some(msg) = requests.next().await {
            let _ = server.reply(&msg, msg.payload.clone()).await;
        }
    }
});

let client = Node::builder(Keypair::generate()).start().await?;
let mut events = client.events();
let peer = client.dial(server.listen_addrs()[0].clone()).await?;
let echo = client.request(peer, Opcode::app(1000)?, Bytes::from_static(b"hello")).await?;
assert_eq!(&echo[..], b"hello");
assert!(matches!(events.next().await, Some(Event::PeerConnected { .. })));
# Ok(()) }
# tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
```
"#
)]
//!
//! A custom protocol is one small [`Protocol`] impl, registered with
//! [`NodeBuilder::protocol`] or [`Node::register`]; see `sinew_protocol` for the trait and a
//! test host that runs protocols on virtual time.
//!
//! # Cargo features
//!
//! | feature | adds | default |
//! |---|---|---|
//! | `tcp` | the TCP transport (`tcp://`; `NodeConfig::tcp`, `TcpConfig`) | yes |
//! | `noise` | Noise XX over TCP and WebSocket (a dialler's default security), and `NodeBuilder::memory`, the in-process transport | yes |
//! | `tls` | TLS 1.3 over TCP and WebSocket (`dial_tls`); the node makes an ephemeral certificate at start | no |
//! | `ws` | the WebSocket transport (`ws://`, `wss://`; `NodeConfig::ws`) | no |
//! | `quic` | the QUIC transport (`quic://`; `NodeConfig::quic`), with TLS 1.3: turns on `tls` | no |
//!
//! A listener accepts the securities the node is built with and refuses the others
//! (`NoiseNotAccepted`, `TlsNotAccepted`); built without `noise`, TCP and WebSocket dial with
//! TLS. TCP and WebSocket need `noise`, `tls` or both. With no feature at all, the node runs the
//! transports given to [`NodeBuilder::transport`]. The `sinew` binary turns every feature on.

#[cfg(all(any(feature = "tcp", feature = "ws"), not(any(feature = "noise", feature = "tls"))))]
compile_error!(
    "sinew: the `tcp` and `ws` transports need a security: turn on `noise`, `tls` or both"
);

mod budget;
mod builtin;
mod config;
mod conn;
mod driver;
mod error;
mod events;
mod feed;
mod nat;
mod node;
mod queue;
mod shared;
mod state;
mod stats;
mod stream;

pub use builtin::Inbox;
pub use bytes::Bytes;
pub use config::{AccessPolicy, NodeConfig, PerfLimits};
pub use conn::outbound::PerfReport;
pub use error::{
    ConfigError, DialError, PeerError, RegisterError, RequestError, SendError, StartError, Stopped,
    StreamError,
};
pub use events::{DropReason, Event, Events};
pub use feed::{Feed, Lagged};
pub use node::{Handle, Node, NodeBuilder, ProtocolHandle, TransportParts};
pub use sinew_codec::messages::DisconnectCode;
pub use sinew_codec::{Opcode, OpcodeRange, Status};
pub use sinew_host::CallError;
pub use sinew_nat::{MappingMethod, NatEvent, NatState, PortMapperConfig};
pub use sinew_peers::{PeersConfig, Refusal};
pub use sinew_protocol::{
    BroadcastReport, Commands, Ctx, DialFailure, DialOutcome, Handled, Message, Opcodes, PeerInfo,
    Protocol, ProtocolEvent, Reason, RequestFailure, Response, TimerId, TransferId, TransferStart,
};
#[cfg(feature = "tcp")]
pub use sinew_tcp::TcpConfig;
pub use sinew_transport::{NoiseSuite, Security};
pub use sinew_types::{Addr, Direction, Keypair, PeerId};
pub use state::{NetworkState, PeerState};
pub use stream::{AppStream, IncomingStream, StreamInbox};

/// The crates sinew is built from, for what the top level does not re-export.
pub mod layers {
    pub use sinew_codec as codec;
    pub use sinew_host as host;
    #[cfg(feature = "noise")]
    pub use sinew_memory as memory;
    pub use sinew_nat as nat;
    pub use sinew_peers as peers;
    pub use sinew_protocol as protocol;
    #[cfg(feature = "quic")]
    pub use sinew_quic as quic;
    pub use sinew_secure as secure;
    #[cfg(feature = "tcp")]
    pub use sinew_tcp as tcp;
    pub use sinew_transport as transport;
    pub use sinew_types as types;
    #[cfg(feature = "ws")]
    pub use sinew_ws as ws;
}

/// The README's examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
