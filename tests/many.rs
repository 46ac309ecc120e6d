//! Fifty nodes connected to one node exchange messages.

use bytes::Bytes;
use sinew::Opcode;
use sinew_tests::{WAIT, addr, node, node_with};

#[tokio::test]
async fn fifty_nodes_around_one_exchange_messages() {
    let op = Opcode::app(1000).unwrap();
    // Every leaf dials from 127.0.0.1: lift the per-IP limit (16 by default) for this hub.
    let hub = node_with(|c| {
        c.peers.limits.max_per_ip = 64;
        c.peers.limits.max_pending_per_ip = 64;
    })
    .await;
    let mut hub_inbox = hub.inbox(op).await.unwrap();
    let mut hub_events = hub.events();
    let mut leaves = Vec::new();
    for _ in 0..50 {
        let leaf = node().await;
        let inbox = leaf.inbox(op).await.unwrap();
        leaves.push((leaf, inbox));
    }
    let dials = leaves.iter().map(|(leaf, _)| {
        let (leaf, target) = (leaf.clone(), addr(&hub));
        tokio::spawn(async move { leaf.dial(target).await })
    });
    for dial in dials.collect::<Vec<_>>() {
        assert_eq!(dial.await.unwrap().unwrap(), hub.peer_id());
    }
    sinew_tests::connected_count(&mut hub_events, 50).await;
    for (leaf, _) in &leaves {
        leaf.send(hub.peer_id(), op, Bytes::from(leaf.peer_id().to_string())).await.unwrap();
    }
    let mut from = std::collections::BTreeSet::new();
    while from.len() < 50 {
        let msg = tokio::time::timeout(WAIT, hub_inbox.next()).await.unwrap().unwrap();
        assert_eq!(msg.payload, Bytes::from(msg.peer.to_string()));
        from.insert(msg.peer);
    }
    assert_eq!(hub.broadcast(op, Bytes::from_static(b"to all fifty")).sent.len(), 50);
    for (_, inbox) in &mut leaves {
        let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
        assert_eq!((msg.peer, &msg.payload[..]), (hub.peer_id(), &b"to all fifty"[..]));
    }
}
