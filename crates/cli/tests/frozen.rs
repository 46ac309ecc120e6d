//! A peer frozen with SIGSTOP while its window is full: a real `sinew node` process that stops
//! reading with everything in between full (its kernel buffers, yamux's window, our queue).
//! Missed pongs disconnect it within their bound, and `disconnect`, `remove_peer` and
//! `shutdown` each reach it within their grace period.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use sinew::{Event, Events, Keypair, Node, NodeConfig, Opcode, PeerId, Reason};
use support::NodeProcess;

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);
const MISSED: u32 = 3;
/// Scheduling slack on a shared, noisy machine.
const SLACK: Duration = Duration::from_millis(500);

/// A frozen receiver and a sender whose window towards it is full.
struct Frozen {
    receiver: NodeProcess,
    sender: Node,
    peer: PeerId,
    events: Events,
    frozen_at: Instant,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a child pid we own and a valid signal.
        unsafe {
            libc::kill(self.receiver.pid(), libc::SIGCONT);
        }
    }
}

async fn frozen_peer() -> Frozen {
    let receiver = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0"]).await;
    let mut config = NodeConfig::default();
    config.peers.ping_interval = INTERVAL;
    config.peers.ping_timeout = TIMEOUT;
    config.peers.max_missed_pings = MISSED;
    let sender = Node::builder(Keypair::generate()).with_config(config).start().await.unwrap();
    let events = sender.events();
    let peer = sender.dial(receiver.addr().parse().unwrap()).await.unwrap();
    sender.ping(peer).await.unwrap();
    #[allow(unsafe_code)]
    // SAFETY: as above.
    let stopped = unsafe { libc::kill(receiver.pid(), libc::SIGSTOP) };
    assert_eq!(stopped, 0);
    let frozen_at = Instant::now();
    // Fill everything between us and the frozen reader: the queue stays full.
    let op = Opcode::app(1000).unwrap();
    let payload = Bytes::from(vec![0x42_u8; 64 * 1024]);
    let mut full_for = 0;
    while full_for < 20 {
        match sender.try_send(peer, op, payload.clone()) {
            Ok(()) => full_for = 0,
            Err(sinew::SendError::Full) => {
                full_for += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let queued = sender.network_state().await.unwrap().peers[0].queued_bytes;
    assert!(queued > 7 << 20, "the window and the queue are full ({queued} bytes queued)");
    Frozen { receiver, sender, peer, events, frozen_at }
}

async fn disconnected_within(frozen: &mut Frozen, since: Instant, bound: Duration) -> Reason {
    let peer = frozen.peer;
    let reason = frozen
        .events
        .wait_for(bound + Duration::from_secs(10), |e| match e {
            Event::PeerDisconnected { peer: p, reason } if *p == peer => Some(reason.clone()),
            _ => None,
        })
        .await
        .expect("the frozen peer is disconnected");
    let took = since.elapsed();
    eprintln!("disconnected after {took:?} ({reason}); bound {bound:?}");
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
    reason
}

#[tokio::test]
async fn missed_pongs_disconnect_a_frozen_peer_within_their_bound() {
    let mut frozen = frozen_peer().await;
    let bound = INTERVAL * (MISSED - 1) + TIMEOUT + INTERVAL;
    let since = frozen.frozen_at;
    let reason = disconnected_within(&mut frozen, since, bound).await;
    assert_eq!(reason, Reason::PingTimeout);
}

#[tokio::test]
async fn disconnect_reaches_a_frozen_peer_within_its_grace() {
    let mut frozen = frozen_peer().await;
    let grace = frozen.sender.config().close_grace;
    let since = Instant::now();
    frozen.sender.disconnect(frozen.peer, sinew::DisconnectCode::SHUTDOWN).await.unwrap();
    disconnected_within(&mut frozen, since, grace).await;
}

#[tokio::test]
async fn remove_peer_reaches_a_frozen_peer_within_its_grace() {
    let mut frozen = frozen_peer().await;
    let grace = frozen.sender.config().close_grace;
    let since = Instant::now();
    frozen.sender.remove_peer(frozen.peer).await.unwrap();
    let reason = disconnected_within(&mut frozen, since, grace).await;
    assert_eq!(reason, Reason::Removed);
}

#[tokio::test]
async fn shutdown_reaches_a_frozen_peer_within_its_grace() {
    let frozen = frozen_peer().await;
    let grace = frozen.sender.config().shutdown_grace;
    let since = Instant::now();
    frozen.sender.shutdown().await;
    let took = since.elapsed();
    eprintln!("shutdown took {took:?}; grace {grace:?}");
    assert!(took <= grace + SLACK, "took {took:?}");
}
