//! The WebSocket transport: TCP, optional TLS (`wss`), the WebSocket upgrade, then sinew's
//! security handshake (Noise, or TLS 1.3 inside the WebSocket) and yamux, as the TCP transport
//! does after its TCP accept.
//!
//! - Addresses: `ws://host:port/path` and `wss://host:port/path` (the path defaults to `/`).
//!   A listener upgrades only requests for its own path; others are answered 404 and their
//!   [`Incoming::upgrade`](sinew_transport::Incoming::upgrade) fails, the listener goes on.
//! - An accepted socket is handed to the node as an `Incoming` before TLS, the WebSocket upgrade
//!   or the security handshake; `upgrade` runs all three and yamux within the handshake timeout.
//!   `refuse` answers a `ws` request with HTTP 503 and the limit's code in the
//!   [`REFUSED_HEADER`] header (the dialler gets `HandshakeError::Refused`); a `wss` socket is
//!   just closed.
//! - Dialling resolves a DNS host at every dial. For `wss` the dialler trusts the roots in
//!   [`WsConfig::wss_dial`] and checks the address's host as the server name; a `wss` listener
//!   presents [`WsConfig::wss_listen`]. rustls with the ring provider only.
//! - [`WsStream`] is the byte stream over binary messages that the security handshake runs on;
//!   it is public for other uses (a browser, another WebSocket implementation).
//! - [`ConnectionInfo`](sinew_transport::ConnectionInfo) addresses are `ws://` or `wss://` with
//!   the path: inbound, both are socket addresses; outbound, the local one is the socket
//!   address and the remote one the address dialled (its host may be a DNS name, which `wss`
//!   needs for the certificate check), without the peer id.
//!
//! Features `noise` and `tls` (both default; at least one is needed) choose the securities run
//! inside the WebSocket. Without `noise` a listener refuses a Noise preamble
//! (`NoiseNotAccepted`) and a dialler uses TLS by default; without `tls` a listener refuses TLS.
//! wss is there either way.
//!
#![cfg_attr(
    feature = "noise",
    doc = r#"
```
# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
use std::sync::Arc;
use sinew_secure::NoiseIdentity;
use sinew_transport::Transport as _;
use sinew_types::Keypair;
use sinew_ws::{WsConfig, WsTransport};

let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
let server = WsTransport::new(Arc::new(NoiseIdentity::new(&server_key, 1)), WsConfig::default());
let client = WsTransport::new(Arc::new(NoiseIdentity::new(&client_key, 2)), WsConfig::default());
let mut listener = server.listen("ws://127.0.0.1:0/sinew".parse()?).await?;
let addr = listener.local_addr().with_peer(server_key.peer_id());
assert_eq!(addr.path(), Some("/sinew"));
let accept = tokio::spawn(async move { listener.accept().await.unwrap().upgrade().await });
let outbound = client.dial(addr).await?;
let inbound = accept.await??;
assert_eq!(outbound.info.peer, server_key.peer_id());
assert_eq!(inbound.info.peer, client_key.peer_id());
assert_eq!(inbound.info.session_tag, outbound.info.session_tag);
assert_eq!(inbound.info.local_addr.path(), Some("/sinew"));
# Ok(()) }
# tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
```
"#
)]
#![forbid(unsafe_code)]

#[cfg(not(any(feature = "noise", feature = "tls")))]
compile_error!(
    "sinew-ws needs a security: turn on its feature `noise`, `tls` or both (the defaults)"
);

mod stream;
mod tls;
mod transport;

pub use stream::{WsStream, WsStreamConfig};
pub use tls::{WssDial, WssListen};
/// The WebSocket implementation underneath, for [`WsStream::connect`] and [`WsStream::accept`]
/// errors and responses.
pub use tokio_tungstenite::tungstenite;
pub use transport::{DEFAULT_PATH, REFUSED_HEADER, WsConfig, WsTransport};
