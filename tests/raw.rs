//! A peer built from sinew's own layers (TCP, Noise, yamux) but driven by hand, to behave
//! badly on purpose: stall mid-frame, stop reading, never answer.

use std::sync::Arc;

use sinew_codec::messages::{ControlHello, MessageBody as _};
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
    let key = Keypair::generate();
    let transport = TcpTransport::new(Arc::new(NoiseIdentity::new(&key, 1)), TcpConfig::default());
    let connection = transport.dial(target.clone()).await.expect("raw dial");
    let mut control = connection.muxer.open_stream().await.expect("control stream");
    let hello =
        Frame::message(Opcode::CONTROL_STREAM, ControlHello { version: 1 }.encode()).to_bytes();
    control.write_all(&hello).await.expect("hello");
    control.flush().await.expect("flush");
    RawPeer { id: key.peer_id(), _connection: connection, control }
}
