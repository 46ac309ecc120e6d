//! Each connection limit refuses with its typed error.

use std::time::Duration;

use sinew::layers::transport::RefusedLimit;
use sinew::{DialError, Event, Refusal};
use sinew_tests::{WAIT, addr, node, node_with, tcp_node, tcp_node_with};
use tokio::net::TcpStream;

async fn refused_inbound(events: &mut sinew::Events) -> String {
    events
        .wait_for(WAIT, |e| match e {
            Event::InboundRefused { refusal, .. } => Some(refusal.to_string()),
            _ => None,
        })
        .await
        .expect("an inbound connection is refused")
}

#[tokio::test]
async fn outbound_limit() {
    let a = node_with(|c| c.peers.limits.max_outbound = 1).await;
    let (b, c) = (node().await, node().await);
    a.dial(addr(&b)).await.unwrap();
    assert!(matches!(
        a.dial(addr(&c)).await,
        Err(DialError::Limit(Refusal::Outbound { limit: 1 }))
    ));
}

#[tokio::test]
async fn total_limit() {
    let a = node_with(|c| c.peers.limits.max_total = 1).await;
    let (b, c) = (node().await, node().await);
    b.dial(addr(&a)).await.unwrap();
    assert!(matches!(a.dial(addr(&c)).await, Err(DialError::Limit(Refusal::Total { limit: 1 }))));
}

#[tokio::test]
async fn inbound_limit() {
    let a = node_with(|c| c.peers.limits.max_inbound = 1).await;
    let mut events = a.events();
    let (b, c) = (node().await, node().await);
    b.dial(addr(&a)).await.unwrap();
    // The dialler learns which limit, from the listener's refusal record.
    let refused = c.dial(addr(&a)).await;
    assert!(
        matches!(refused, Err(DialError::Refused { limit: RefusedLimit::Inbound, .. })),
        "{refused:?}"
    );
    assert!(refused_inbound(&mut events).await.contains("inbound connection limit"));
}

#[tokio::test]
async fn per_ip_limit() {
    let a = node_with(|c| c.peers.limits.max_per_ip = 1).await;
    let mut events = a.events();
    let (b, c) = (node().await, node().await);
    b.dial(addr(&a)).await.unwrap();
    let refused = c.dial(addr(&a)).await;
    assert!(
        matches!(refused, Err(DialError::Refused { limit: RefusedLimit::PerIp, .. })),
        "{refused:?}"
    );
    assert!(refused_inbound(&mut events).await.contains("per-IP"));
}

#[tokio::test]
async fn pending_handshake_limit() {
    let a = tcp_node_with(|c| {
        c.peers.limits.max_pending_inbound = 1;
        c.tcp.noise.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let mut events = a.events();
    // A socket that never starts its handshake holds the one inbound pending slot.
    let _silent = TcpStream::connect(a.listen_addrs()[0].socket_addr().unwrap()).await.unwrap();
    let b = tcp_node_with(|c| c.tcp.noise.handshake_timeout = Duration::from_secs(2)).await;
    let refused = b.dial(addr(&a)).await;
    assert!(
        matches!(refused, Err(DialError::Refused { limit: RefusedLimit::PendingHandshakes, .. })),
        "{refused:?}"
    );
    assert!(refused_inbound(&mut events).await.contains("pending inbound handshake"));
    // Outbound handshakes have their own limit: silent inbound sockets do not block our dials.
    let c = tcp_node().await;
    a.dial(addr(&c)).await.expect("a's own dial goes out");
}

/// A listener at its total limit tells the dialler so.
#[tokio::test]
async fn a_remote_total_limit_is_reported_to_the_dialler() {
    let a = node_with(|c| c.peers.limits.max_total = 1).await;
    let (b, c) = (node().await, node().await);
    let mut a_events = a.events();
    b.dial(addr(&a)).await.unwrap();
    sinew_tests::connected(&mut a_events, b.peer_id()).await;
    let refused = c.dial(addr(&a)).await;
    assert!(
        matches!(refused, Err(DialError::Refused { limit: RefusedLimit::Total, .. })),
        "{refused:?}"
    );
}
