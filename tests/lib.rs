//! Shared helpers for the integration tests: nodes on loopback port 0, event waits with
//! timeouts (never sleeps), and the environment checks of tests that need the machine.

use std::time::Duration;

use sinew::{Addr, Event, Events, Keypair, Node, NodeConfig, PeerId};

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Whether the suite runs over the in-process transport (`SINEW_TEST_TRANSPORT=memory`)
/// instead of TCP: every test written against [`node_with`] runs over both.
pub fn over_memory() -> bool {
    std::env::var("SINEW_TEST_TRANSPORT").is_ok_and(|t| t == "memory")
}

/// A node listening on port 0 of the transport under test (TCP on 127.0.0.1, or the
/// in-process transport), configured by `configure`.
pub async fn node_with(configure: impl FnOnce(&mut NodeConfig)) -> Node {
    if over_memory() {
        let mut config = NodeConfig::default();
        configure(&mut config);
        return Node::builder(Keypair::generate())
            .with_config(config)
            .memory()
            .listen("memory://127.0.0.1:0".parse().expect("valid address"))
            .start()
            .await
            .expect("node starts");
    }
    tcp_node_with(configure).await
}

/// A node listening on TCP 127.0.0.1 port 0 whatever the transport under test: for tests of
/// TCP itself (raw sockets, namespaces, shaped links).
pub async fn tcp_node_with(configure: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::default();
    configure(&mut config);
    Node::builder(Keypair::generate())
        .with_config(config)
        .listen("tcp://127.0.0.1:0".parse().expect("valid address"))
        .start()
        .await
        .expect("node starts")
}

/// A node with default settings, listening on 127.0.0.1 port 0.
pub async fn node() -> Node {
    node_with(|_| {}).await
}

/// A TCP node with default settings, whatever the transport under test.
pub async fn tcp_node() -> Node {
    tcp_node_with(|_| {}).await
}

/// The node's first listen address, naming its peer id.
pub fn addr(node: &Node) -> Addr {
    node.listen_addrs()[0].clone().with_peer(node.peer_id())
}

/// Waits for a `PeerConnected` of `peer`.
pub async fn connected(events: &mut Events, peer: PeerId) {
    events
        .wait_for(WAIT, |e| {
            matches!(e, Event::PeerConnected { peer: p, .. } if *p == peer).then_some(())
        })
        .await
        .expect("peer connected in time");
}

/// Waits for a `PeerDisconnected` of `peer` and returns its reason.
pub async fn disconnected(events: &mut Events, peer: PeerId) -> sinew::Reason {
    events
        .wait_for(WAIT, |e| match e {
            Event::PeerDisconnected { peer: p, reason } if *p == peer => Some(reason.clone()),
            _ => None,
        })
        .await
        .expect("peer disconnected in time")
}

/// Waits until `n` peers have connected (counting `PeerConnected` events).
pub async fn connected_count(events: &mut Events, n: usize) {
    let mut seen = 0;
    while seen < n {
        events
            .wait_for(WAIT, |e| matches!(e, Event::PeerConnected { .. }).then_some(()))
            .await
            .unwrap_or_else(|| panic!("only {seen} of {n} peers connected in time"));
        seen += 1;
    }
}

/// Polls `check` (an async condition on real state) until it holds, up to [`WAIT`]. For state
/// that has no event; each round waits for the node's own progress, not a fixed sleep.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Whether the tests run under CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) with a message on a developer machine when `missing` says what is
/// missing; panics under CI.
pub fn skip_unless(available: bool, missing: &str) -> bool {
    if available {
        return false;
    }
    assert!(!in_ci(), "required under CI=true: {missing}");
    eprintln!("skipped: {missing}");
    true
}

/// Checks that `target` still serves a well-behaved peer: a fresh node dials it and is answered.
pub async fn still_serves(target: &Node) {
    let good = node().await;
    let peer = good.dial(addr(target)).await.expect("a good peer still connects");
    good.ping(peer).await.expect("and gets answers");
}
