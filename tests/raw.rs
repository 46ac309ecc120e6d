//! A peer built from sinew's own layers (TCP or the in-process transport, Noise, yamux) but
//! driven by hand, to behave
//! badly on purpose: stall mid-frame, stop reading, never answer.

use std::sync::Arc;

use sinew_codec::messages::{CONTROL_VERSION, ControlHello, MessageBody as _};
use sinew_codec::{Frame, Opcode};
use sinew_secure::NoiseIdentity;
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::{Connection, Stream, Transport as _};
use sinew_types::{Addr, Keypair, PeerId};
use tokio::io::AsyncWriteExt as _;

/// A hand-driven peer: an authenticated, multiplexed connection and its control stream.
pub(crate) struct RawPeer {
    pub(crate) id: PeerId,
    /// Kept so the connection lives as long as the peer.
    pub(crate) _connection: Connection,
    pub(crate) control: Stream,
}

/// Dials `target`, opens the control stream and says hello, then does nothing by itself.
pub(crate) async fn raw_connect(target: &Addr) -> RawPeer {
    raw_connect_as(&Keypair::generate(), 1, target).await
}

/// Like [`raw_connect`], as `key` with boot nonce `boot_nonce` (a second connection of the
/// same peer process uses the same pair).
pub(crate) async fn raw_connect_as(key: &Keypair, boot_nonce: u64, target: &Addr) -> RawPeer {
    raw_connect_with(key, boot_nonce, target, TcpConfig::default()).await
}

/// Like [`raw_connect_as`], with transport settings of its own (e.g. more streams).
pub(crate) async fn raw_connect_with(
    key: &Keypair,
    boot_nonce: u64,
    target: &Addr,
    config: TcpConfig,
) -> RawPeer {
    let identity = Arc::new(NoiseIdentity::new(key, boot_nonce));
    // The transport under test: whichever the target listens on.
    let connection = if target.scheme() == sinew_types::Scheme::Memory {
        let config = sinew_memory::MemoryConfig { noise: config.noise, mux: config.mux };
        sinew_memory::MemoryTransport::new(identity, config).dial(target.clone()).await
    } else {
        TcpTransport::new(identity, config).dial(target.clone()).await
    };
    let connection = connection.expect("raw dial");
    let mut control = connection.muxer.open_stream().await.expect("control stream");
    let hello =
        Frame::message(Opcode::CONTROL_STREAM, ControlHello { version: CONTROL_VERSION }.encode())
            .to_bytes();
    control.write_all(&hello).await.expect("hello");
    control.flush().await.expect("flush");
    RawPeer { id: key.peer_id(), _connection: connection, control }
}

impl RawPeer {
    /// Reads the next frame from the control stream.
    pub(crate) async fn next_frame(&mut self, buf: &mut bytes::BytesMut) -> Option<Frame> {
        use tokio::io::AsyncReadExt as _;
        let mut decoder = sinew_codec::FrameDecoder::new(sinew_codec::SYSTEM_FRAME_CAP);
        loop {
            if let Some(frame) = decoder.decode(buf).expect("valid frames") {
                return Some(frame);
            }
            if self.control.read_buf(buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// Reads control frames until the node's `DISCONNECT`, and returns its code.
    pub(crate) async fn goodbye_code(&mut self) -> sinew::DisconnectCode {
        use sinew_codec::messages::MessageBody as _;
        let mut buf = bytes::BytesMut::new();
        tokio::time::timeout(sinew_tests::WAIT, async {
            loop {
                let frame = self.next_frame(&mut buf).await.expect("a goodbye before the end");
                if frame.opcode == Opcode::DISCONNECT {
                    return sinew_codec::messages::Disconnect::decode(frame.payload).unwrap().code;
                }
            }
        })
        .await
        .expect("a goodbye in time")
    }

    /// Writes one frame on the control stream.
    pub(crate) async fn write_frame(&mut self, frame: &Frame) {
        self.control.write_all(&frame.to_bytes()).await.expect("write");
        self.control.flush().await.expect("flush");
    }

    /// Opens this peer's message stream (its application lane) and writes its header.
    pub(crate) async fn message_stream(&self) -> Stream {
        let mut stream = self._connection.muxer.open_stream().await.expect("message stream");
        let header = Frame::message(Opcode::MESSAGE_STREAM, bytes::Bytes::new()).to_bytes();
        stream.write_all(&header).await.expect("header");
        stream.flush().await.expect("flush");
        stream
    }
}
