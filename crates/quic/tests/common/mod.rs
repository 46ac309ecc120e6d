//! Helpers shared by the integration tests: transports and connected pairs on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sinew_quic::{QuicConfig, QuicTransport};
use sinew_secure::TlsIdentity;
use sinew_transport::{Connection, Listener, Transport as _};
use sinew_types::{Addr, Keypair};

/// How long any single awaited event may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future).await.expect("timed out")
}

/// A node: its key and its transport.
pub struct Node {
    pub key: Keypair,
    pub transport: QuicTransport,
}

impl Node {
    pub fn new(config: QuicConfig) -> Self {
        let key = Keypair::generate();
        let identity = TlsIdentity::new(&key, rand_nonce()).expect("identity");
        Self { transport: QuicTransport::new(Arc::new(identity), config), key }
    }

    pub async fn listen(&self) -> Box<dyn Listener> {
        within(self.transport.listen("quic://127.0.0.1:0".parse().unwrap())).await.expect("listen")
    }
}

fn rand_nonce() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
}

/// The listener's address with its expected peer id.
pub fn addr_of(listener: &dyn Listener, node: &Node) -> Addr {
    listener.local_addr().with_peer(node.key.peer_id())
}

/// Two nodes connected: (dialler's connection, listener's connection, dialler, listener node).
pub async fn connected(config: QuicConfig) -> (Connection, Connection, Node, Node) {
    let (a, b) = (Node::new(config.clone()), Node::new(config));
    let mut listener = b.listen().await;
    let addr = addr_of(listener.as_ref(), &b);
    let accept = tokio::spawn(async move {
        let conn = listener.accept().await.expect("accept").upgrade().await.expect("upgrade");
        (conn, listener)
    });
    let outbound = within(a.transport.dial(addr)).await.expect("dial");
    let (inbound, listener) = within(accept).await.expect("accept task");
    // The listener may go: established connections live on.
    drop(listener);
    (outbound, inbound, a, b)
}
