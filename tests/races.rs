//! Simultaneous dials and repeated reconnection.

use std::sync::Arc;

use bytes::Bytes;
use sinew::{Direction, Node, Opcode};
use sinew_tests::{WAIT, addr, disconnected, eventually, node};
use tokio::sync::Barrier;

const MESSAGES: u32 = 300;

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
/// connection survives, the same one on both sides, nothing sent during the race is lost or
/// reordered (each sender's messages arrive in the order sent), and neither side sees the
/// peer disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_keep_one_connection_and_lose_nothing() {
    let op = Opcode::app(1000).unwrap();
    for round in 0..100 {
        let (a, b) = (node().await, node().await);
        let mut a_inbox = a.inbox(op).await.unwrap();
        let mut b_inbox = b.inbox(op).await.unwrap();
        let (mut a_events, mut b_events) = (a.events(), b.events());
        let barrier = Arc::new(Barrier::new(2));
        let race = |from: Node, to: sinew::Addr, barrier: Arc<Barrier>| async move {
            let peer = to.peer().expect("the address names the peer");
            let mut events = from.events();
            barrier.wait().await;
            let dial = tokio::spawn({
                let from = from.clone();
                async move { from.dial(to).await.expect("dial") }
            });
            // Start sending the moment the first connection is up, so the duplicate swap
            // happens while messages are queued and being written.
            sinew_tests::connected(&mut events, peer).await;
            for i in 0..MESSAGES {
                let mut payload = vec![0u8; 1024];
                payload[..4].copy_from_slice(&i.to_le_bytes());
                from.send(peer, op, Bytes::from(payload)).await.expect("send");
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            dial.await.unwrap();
        };
        let ta = tokio::spawn(race(a.clone(), addr(&b), barrier.clone()));
        let tb = tokio::spawn(race(b.clone(), addr(&a), barrier));
        ta.await.unwrap();
        tb.await.unwrap();
        for inbox in [&mut a_inbox, &mut b_inbox] {
            let mut got: Vec<u32> = Vec::new();
            while got.len() < MESSAGES as usize {
                let Ok(msg) = tokio::time::timeout(WAIT, inbox.next()).await else {
                    let (sa, sb) = (a.network_state().await, b.network_state().await);
                    panic!("round {round}: {} of {MESSAGES} arrived\n{sa:#?}\n{sb:#?}", got.len());
                };
                let msg = msg.unwrap();
                got.push(u32::from_le_bytes(msg.payload[..4].try_into().unwrap()));
            }
            // Never sorted: the order is part of the promise.
            assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>(), "round {round}: order");
        }
        assert!(
            eventually(|| one_connection_each(&a, &b)).await,
            "round {round}: one connection, the same on both sides"
        );
        for events in [&mut a_events, &mut b_events] {
            while let Some(event) = events.try_next() {
                assert!(
                    !matches!(event, sinew::Event::PeerDisconnected { .. }),
                    "round {round}: spurious {event:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn disconnect_and_redial_a_hundred_times() {
    let (a, b) = (node().await, node().await);
    let mut events = b.events();
    for round in 0..100 {
        let peer = b.dial(addr(&a)).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.ping(peer).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.disconnect(peer, sinew::DisconnectCode::SHUTDOWN).await.unwrap();
        disconnected(&mut events, peer).await;
    }
}

/// Sends 300 numbered frames of 1 KiB from a protocol the moment a peer connects (more than
/// one connection's write credit, so some are in a connection's lane and some wait in the
/// host when a duplicate swap happens), and records what arrives.
struct Streamer(Arc<std::sync::Mutex<Vec<u32>>>);
impl sinew::Protocol for Streamer {
    fn opcodes(&self) -> sinew::Opcodes {
        Opcode::app(1300).unwrap().into()
    }
    fn on_peer_connected(&mut self, ctx: &mut sinew::Ctx<'_>, peer: &sinew::PeerInfo) {
        for i in 0..MESSAGES {
            let mut payload = vec![0u8; 1024];
            payload[..4].copy_from_slice(&i.to_le_bytes());
            ctx.try_send(&peer.peer, Opcode::app(1300).unwrap(), Bytes::from(payload)).unwrap();
        }
    }
    fn on_message(&mut self, _ctx: &mut sinew::Ctx<'_>, msg: sinew::Message) -> sinew::Handled {
        self.0.lock().unwrap().push(u32::from_le_bytes(msg.payload[..4].try_into().unwrap()));
        sinew::Handled::Yes
    }
}

/// The race again, with a protocol sending: frames the host handed the connection that loses
/// the race are written before it ends (the lane lease keeps them ahead of the survivor's),
/// so each side gets every frame once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_frames_sent_during_the_race_are_neither_lost_nor_reordered() {
    for round in 0..50 {
        let start = |seen: Arc<std::sync::Mutex<Vec<u32>>>| async move {
            Node::builder(sinew::Keypair::generate())
                .listen("tcp://127.0.0.1:0".parse().unwrap())
                .protocol(Streamer(seen))
                .start()
                .await
                .unwrap()
        };
        let (seen_a, seen_b) = (Arc::default(), Arc::default());
        let (a, b) = (start(Arc::clone(&seen_a)).await, start(Arc::clone(&seen_b)).await);
        let barrier = Arc::new(Barrier::new(2));
        let race = |from: Node, to: sinew::Addr, barrier: Arc<Barrier>| async move {
            barrier.wait().await;
            from.dial(to).await.expect("dial");
        };
        let ta = tokio::spawn(race(a.clone(), addr(&b), barrier.clone()));
        let tb = tokio::spawn(race(b.clone(), addr(&a), barrier));
        ta.await.unwrap();
        tb.await.unwrap();
        for (name, seen) in [("a", &seen_a), ("b", &seen_b)] {
            let all = eventually(|| {
                let seen = Arc::clone(seen);
                async move { seen.lock().unwrap().len() >= MESSAGES as usize }
            })
            .await;
            let got = seen.lock().unwrap().clone();
            if !all {
                let (sa, sb) = (a.network_state().await, b.network_state().await);
                panic!("round {round}: {name} got {} of {MESSAGES}\n{sa:#?}\n{sb:#?}", got.len());
            }
            // Never sorted: the order is part of the promise.
            assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>(), "round {round}: {name}");
        }
    }
}
