//! Simultaneous dials and repeated reconnection.

use std::sync::Arc;

use bytes::Bytes;
use sinew::{Direction, Node, Opcode};
use sinew_tests::{WAIT, addr, disconnected, eventually, node};
use tokio::sync::Barrier;

const MESSAGES: u32 = 20;

async fn one_connection_each(a: &Node, b: &Node) -> bool {
    let (sa, sb) = (a.network_state().await.unwrap(), b.network_state().await.unwrap());
    sa.connections == 1
        && sb.connections == 1
        && sa.peers.len() == 1
        && sb.peers.len() == 1
        && (sa.peers[0].direction == Direction::Outbound)
            == (sb.peers[0].direction == Direction::Inbound)
}

/// Both nodes dial each other at the same moment, then send at once, 100 times: one
/// connection survives, the same one on both sides, and nothing sent during the race is lost.
#[tokio::test]
async fn simultaneous_dials_keep_one_connection_and_lose_nothing() {
    let op = Opcode::app(1000).unwrap();
    for round in 0..100 {
        let (a, b) = (node().await, node().await);
        let mut a_inbox = a.inbox(op).await.unwrap();
        let mut b_inbox = b.inbox(op).await.unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let race = |from: Node, to: sinew::Addr, barrier: Arc<Barrier>| async move {
            barrier.wait().await;
            let peer = from.dial(to).await.expect("dial");
            for i in 0..MESSAGES {
                from.send(peer, op, Bytes::from(i.to_le_bytes().to_vec())).await.expect("send");
            }
        };
        let ta = tokio::spawn(race(a.clone(), addr(&b), barrier.clone()));
        let tb = tokio::spawn(race(b.clone(), addr(&a), barrier));
        ta.await.unwrap();
        tb.await.unwrap();
        for inbox in [&mut a_inbox, &mut b_inbox] {
            let mut got: Vec<u32> = Vec::new();
            while got.len() < MESSAGES as usize {
                let msg = tokio::time::timeout(WAIT, inbox.next())
                    .await
                    .expect("all messages arrive")
                    .unwrap();
                got.push(u32::from_le_bytes(msg.payload[..4].try_into().unwrap()));
            }
            got.sort_unstable();
            assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>(), "round {round}");
        }
        assert!(
            eventually(|| one_connection_each(&a, &b)).await,
            "round {round}: one connection, the same on both sides"
        );
    }
}

#[tokio::test]
async fn disconnect_and_redial_a_hundred_times() {
    let (a, b) = (node().await, node().await);
    let mut events = b.events();
    for round in 0..100 {
        let peer = b.dial(addr(&a)).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.ping(peer).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.disconnect(peer, sinew::DisconnectCode::SHUTDOWN).await;
        disconnected(&mut events, peer).await;
    }
}
