//! The QUIC transport: quinn endpoints, TLS 1.3 bound to Ed25519 identities, native streams.
//!
//! [`QuicTransport`] dials and listens on `quic://host:port` addresses. The TLS configuration is
//! `sinew-secure`'s ([`TlsIdentity`](sinew_secure::TlsIdentity)): an ephemeral ECDSA P-256
//! certificate carrying the node's Ed25519 identity, mutual authentication, ALPN `sinew/1`,
//! AES-128-GCM first. Connections come out authenticated ([`ConnectionInfo`] with
//! [`Security::Tls`](sinew_transport::Security::Tls), the remote's peer id and boot nonce from
//! its certificate, and a session tag from the TLS exporter) and multiplexed by QUIC itself
//! behind sinew's [`MuxedConnection`](sinew_transport::MuxedConnection).
//!
//! # Endpoints
//!
//! - Each [`listen`](sinew_transport::Transport::listen) binds one UDP socket and one quinn
//!   endpoint, which accepts and also dials: a dial goes out from a listening endpoint of the
//!   same IP family that can reach the remote (an unspecified listen address reaches anyone, a
//!   loopback one only loopback), so the remote sees our listening port (which helps NAT).
//!   Without one, dials use a client-only endpoint per IP family, bound to the unspecified
//!   address and port 0 on first use and shared by all later dials.
//! - Dropping a listener stops it accepting; its established connections go on.
//! - A DNS host is resolved at every dial and each address tried in turn, the whole dial bounded
//!   by [`QuicConfig::dial_timeout`] and each attempt's handshake by
//!   [`QuicConfig::handshake_timeout`]. A dial whose address names a peer id that reaches
//!   someone else fails with [`HandshakeError::UnexpectedPeer`](sinew_transport::HandshakeError)
//!   (our verifier refuses the certificate, so the handshake never completes); dialling
//!   ourselves fails with `SelfConnection`.
//! - The listener hands the node an [`Incoming`](sinew_transport::Incoming) before the
//!   handshake: `upgrade` runs it (bounded by the handshake timeout); `refuse` answers QUIC's
//!   `CONNECTION_REFUSED` without any cryptography, which the dialler reports as
//!   `HandshakeError::Refused` with `RefusedLimit::Other(0)` (QUIC's refusal carries no reason).
//!
//! # Streams
//!
//! QUIC bidirectional streams, with the same contract as sinew's yamux muxer:
//! - the opener writes first (the remote learns of a stream with its first bytes);
//! - `finish` (`poll_shutdown`) queues FIN after the data written and returns at once, as on
//!   yamux; [`MuxedConnection::close`](sinew_transport::MuxedConnection::close) first waits
//!   (bounded by `close_timeout`) until the remote acknowledged what finished streams sent, so
//!   a connection closed that way after a finish loses nothing (dropping its last handle
//!   instead closes at once);
//! - dropping a stream without finishing resets it ([`RESET_CODE`]) and dropping it before its
//!   end was read stops the receiving half ([`STOP_CODE`]);
//! - a read returns 0 bytes only at the remote's FIN: a reset stream, or a closed or lost
//!   connection, is an error of kind `ConnectionReset`;
//! - `set_priority(true)` gives the stream quinn priority 1 (others have 0): its buffered data
//!   is sent before theirs;
//! - the stream limits are sinew's ([`QuicConfig::limits`], enforced by `MuxedConnection`);
//!   quinn lets the remote open [`STREAM_SLACK`] more ([`quinn_stream_limit`]), so its limit
//!   only makes an opener wait and sinew's is the one that resets and counts. quinn's credit
//!   starts lower, at [`INITIAL_STREAM_CREDIT`] streams at once, and grows as inbound streams
//!   are held open: quinn keeps state for every stream the remote may open, so an idle
//!   connection with the full credit would hold 4 KiB more.
//!
//! Closing a connection ([`CLOSE_CODE`]) is QUIC's immediate close: data not yet acknowledged
//! is abandoned (finish streams first to deliver it), and the remote's streams end with
//! `ConnectionReset` once it has read what had arrived. Dropping every handle of a connection
//! closes it the same way.
//!
//! # Settings, and why ([`QuicConfig`])
//!
//! Measured on the project's 2-vCPU test machine over loopback (see `performance.md`): quinn
//! 0.11 moved 738 MB/s with its defaults, 859 MB/s with AES-128-GCM, and 938 MB/s with
//! AES-128-GCM, 16 MiB windows and 4 MiB UDP socket buffers. So:
//! - **Cipher**: AES-128-GCM first (`sinew-secure`'s provider), which is also the suite QUIC's
//!   initial keys need.
//! - **Windows**: 16 MiB per stream ([`QuicConfig::stream_receive_window`]), 24 MiB per
//!   connection ([`QuicConfig::receive_window`], above one stream's window so that one bulk
//!   stream never blocks the control stream), 16 MiB send window. 16 MiB covers 1 Gbit/s at
//!   130 ms of round trip; it is also what one remote can make us buffer per stream.
//! - **UDP socket buffers**: 4 MiB each way asked for, which removes loss at full speed
//!   (+5-10% here). The kernel may grant less (Linux caps at `net.core.rmem_max`/`wmem_max`);
//!   what it granted is read back and exposed by [`QuicTransport::socket_buffers`] and logged
//!   at debug level.
//! - **Segmentation offload**: GSO (and GRO on receive) stay on, quinn's default; quinn falls
//!   back by itself where the kernel lacks them.
//! - **Idle timeout**: 60 s ([`QuicConfig::max_idle_timeout`]), a liveness bound above the
//!   node's keepalive, separate from the node's application idle timeout; no QUIC keep-alive by
//!   default ([`QuicConfig::keep_alive_interval`]).
//! - No unidirectional streams and no datagrams (sinew uses neither).
//!
//! # Example
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sinew_quic::{QuicConfig, QuicTransport};
//! use sinew_secure::TlsIdentity;
//! use sinew_transport::{Security, Transport as _};
//! use sinew_types::Keypair;
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
//! let server = QuicTransport::new(Arc::new(TlsIdentity::new(&server_key, 1)?), QuicConfig::default());
//! let client = QuicTransport::new(Arc::new(TlsIdentity::new(&client_key, 2)?), QuicConfig::default());
//! let mut listener = server.listen("quic://127.0.0.1:0".parse()?).await?;
//! let addr = listener.local_addr().with_peer(server_key.peer_id());
//! let accept = tokio::spawn(async move { listener.accept().await.unwrap().upgrade().await });
//! let outbound = client.dial(addr).await?;
//! let inbound = accept.await??;
//! assert_eq!(outbound.info.peer, server_key.peer_id());
//! assert_eq!(inbound.info.peer, client_key.peer_id());
//! assert_eq!(inbound.info.session_tag, outbound.info.session_tag);
//! assert_eq!(outbound.info.security, Security::Tls);
//!
//! let mut stream = outbound.muxer.open_stream().await?;
//! stream.write_all(b"ping").await?; // the opener writes first
//! stream.finish().await?;
//! let mut incoming = inbound.muxer.accept_stream().await.expect("a stream");
//! let mut got = Vec::new();
//! incoming.read_to_end(&mut got).await?;
//! assert_eq!(got, b"ping");
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! [`ConnectionInfo`]: sinew_transport::ConnectionInfo
#![deny(unsafe_code)]

mod config;
mod muxer;
mod stream;
mod transport;

pub use config::QuicConfig;
pub use muxer::{
    CLOSE_CODE, INITIAL_STREAM_CREDIT, STREAM_CREDIT_HEADROOM, STREAM_CREDIT_STEP, STREAM_SLACK,
    initial_stream_credit, muxed, quinn_stream_limit,
};
pub use stream::{RESET_CODE, STOP_CODE};
pub use transport::{QuicTransport, SocketBuffers};
