//! The one trait every sinew protocol and plugin implements.
//!
//! A [`Protocol`] is a sans-IO state machine: the node (or the simulator) calls its methods with
//! events — start, a peer connected or identified, a message, a response, a timer, a peer
//! disconnected, stop — and the protocol answers by queueing actions on its [`Ctx`]: send,
//! request, reply, broadcast, set a timer, authorize, disconnect, dial, emit an event. `Ctx`
//! does no I/O and never blocks; time ([`Ctx::now`]) and randomness ([`Ctx::rng`]) come from the
//! host, so the same protocol object runs on a real node and on virtual time.
//!
//! Order of calls for one protocol: `on_start` once; then any interleaving of
//! `on_peer_connected` (before any message from that peer), `on_peer_identified`,
//! `on_message`, `on_response`, `on_timer`, `on_dial_outcome`, `on_addresses_changed` and
//! `on_peer_disconnected`
//! (after the peer's last message); `on_stop` once at the end. Callbacks of one node never run concurrently.
//!
//! A protocol that needs long work spawns its own task and talks to the node through the
//! node's handle; callbacks must return quickly.
//!
//! A custom protocol is one small impl. This echo protocol answers requests on opcode 1001
//! with the request's payload; [`testing::TestHost`] runs it without a node:
//!
//! ```
//! use bytes::Bytes;
//! use sinew_codec::{FrameKind, Opcode, OpcodeRange};
//! use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol, testing::TestHost};
//! # use sinew_types::{Keypair, Direction};
//! # use sinew_protocol::PeerInfo;
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn opcodes(&self) -> Opcodes {
//!         OpcodeRange::single(Opcode::app(1001).unwrap()).into()
//!     }
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
//!         let _ = ctx.reply(&msg, msg.payload.clone());
//!         Handled::Yes
//!     }
//! }
//!
//! # let (me, peer) = (Keypair::generate().peer_id(), Keypair::generate().peer_id());
//! # let now = std::time::Instant::now();
//! let mut host = TestHost::new(me, now, 1);
//! # host.connect(PeerInfo { peer, direction: Direction::Inbound, remote_addr: "tcp://127.0.0.1:1".parse().unwrap(), connected_at: now, identity: None, authorized: true });
//! let mut echo = Echo;
//! let msg = Message { peer, opcode: Opcode::app(1001)?, kind: FrameKind::Request { id: 9 }, payload: Bytes::from_static(b"hi") };
//! assert_eq!(echo.on_message(&mut host.ctx(&echo), msg), Handled::Yes);
//! let (to, frame) = &host.sent[0];
//! assert_eq!((*to, frame.kind, &frame.payload[..]), (peer, FrameKind::Response { id: 9 }, &b"hi"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod commands;
mod ctx;
pub mod testing;
mod types;

pub use commands::{Commands, Erased, WithCommands};
pub use ctx::{Command, Ctx, Host, ProtocolId};
pub use sinew_codec::{FrameKind, Opcode, OpcodeRange, Status};
pub use types::{
    BroadcastReport, DialFailure, DialOutcome, Handled, Message, Opcodes, PeerInfo, ProtocolEvent,
    Reason, RequestFailure, RequestId, Response, SendError, TimerId, TransferId, TransferStart,
};

use sinew_types::PeerId;

/// A protocol or plugin: events in, actions out (through [`Ctx`]). See the crate docs for the
/// order of calls. Every method but [`Protocol::opcodes`] has a default that does nothing.
pub trait Protocol: Send + 'static {
    /// A short name for logs and events (defaults to the type name).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The opcodes this protocol handles. Two protocols of one node may not overlap.
    fn opcodes(&self) -> Opcodes;

    /// Called once when the protocol is registered on a running node.
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// A peer connected (authenticated and multiplexed). Identify may not have arrived yet.
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        let _ = (ctx, peer);
    }

    /// A peer's identify arrived (or changed): its role, listen addresses and opcodes are known.
    fn on_peer_identified(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        let _ = (ctx, peer);
    }

    /// A peer disconnected.
    fn on_peer_disconnected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerId, reason: &Reason) {
        let _ = (ctx, peer, reason);
    }

    /// A message, acked message or request on one of this protocol's opcodes.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        let _ = (ctx, msg);
        Handled::No
    }

    /// The outcome of a request this protocol made with [`Ctx::request`].
    fn on_response(&mut self, ctx: &mut Ctx<'_>, response: Response) {
        let _ = (ctx, response);
    }

    /// The addresses this node advertises changed (a listener was added, or port mapping found
    /// an external address). Identify re-announces; registrations should follow.
    fn on_addresses_changed(&mut self, ctx: &mut Ctx<'_>, addrs: &[sinew_types::Addr]) {
        let _ = (ctx, addrs);
    }

    /// A large message on one of this protocol's opcodes started arriving: its header is here,
    /// its body not yet. [`Ctx::cancel_transfer`] stops it (the stream is reset, nothing is
    /// delivered); otherwise it arrives in `on_message` when whole.
    fn on_transfer_started(&mut self, ctx: &mut Ctx<'_>, transfer: &TransferStart) {
        let _ = (ctx, transfer);
    }

    /// `peer`'s connection can take more of this protocol's frames (asked for with
    /// [`Ctx::notify_writable`]; once per ask). A protocol that keeps its own queue (with its
    /// own priorities) sends from it here, about [`Ctx::send_capacity`] bytes, and asks again
    /// if more is left.
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, peer: &PeerId) {
        let _ = (ctx, peer);
    }

    /// A dial this protocol asked for with [`Ctx::dial`] ended.
    fn on_dial_outcome(&mut self, ctx: &mut Ctx<'_>, outcome: &DialOutcome) {
        let _ = (ctx, outcome);
    }

    /// A timer set with [`Ctx::set_timer`] fired.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: TimerId) {
        let _ = (ctx, timer);
    }

    /// Called once when the protocol is unregistered or the node shuts down.
    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// A command from the application, its type erased: `Err` gives back a command this
    /// protocol does not take. Implement [`Commands`] and register [`WithCommands`] rather
    /// than this.
    fn on_erased_command(&mut self, ctx: &mut Ctx<'_>, command: Erased) -> Result<Erased, Erased> {
        let _ = ctx;
        Err(command)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a real instant as their virtual time base
mod tests {
    use super::*;
    use crate::testing::TestHost;
    use bytes::Bytes;
    use sinew_types::{Direction, Keypair};
    use std::time::{Duration, Instant};

    fn info(peer: PeerId, now: Instant) -> PeerInfo {
        PeerInfo {
            peer,
            direction: Direction::Outbound,
            remote_addr: "tcp://127.0.0.1:1".parse().unwrap(),
            connected_at: now,
            identity: None,
            authorized: true,
        }
    }

    /// Sends a tick to every peer each second.
    struct Ticker;
    impl Protocol for Ticker {
        fn opcodes(&self) -> Opcodes {
            Opcodes::none()
        }
        fn on_start(&mut self, ctx: &mut Ctx<'_>) {
            ctx.set_timer_in(Duration::from_secs(1));
        }
        fn on_timer(&mut self, ctx: &mut Ctx<'_>, _timer: TimerId) {
            ctx.broadcast(Opcode::app(1000).unwrap(), Bytes::from_static(b"tick"));
            ctx.set_timer_in(Duration::from_secs(1));
        }
    }

    #[test]
    fn timers_run_on_virtual_time_and_broadcast_reports_full_queues() {
        let now = Instant::now();
        let (a, b) = (Keypair::generate().peer_id(), Keypair::generate().peer_id());
        let mut host = TestHost::new(Keypair::generate().peer_id(), now, 3);
        host.connect(info(a, now));
        host.connect(info(b, now));
        host.full.push(b);
        let mut ticker = Ticker;
        ticker.on_start(&mut host.ctx(&Ticker));
        host.advance(&mut ticker, Duration::from_millis(3500));
        assert_eq!(host.sent.len(), 3, "three ticks to the one peer with room");
        assert!(host.sent.iter().all(|(p, _)| *p == a));
        assert_eq!(host.timer_deadlines(), vec![now + Duration::from_secs(4)]);
    }

    #[test]
    fn broadcast_randomly_picks_distinct_peers_deterministically() {
        let now = Instant::now();
        let peers: Vec<PeerId> = (0..10).map(|_| Keypair::generate().peer_id()).collect();
        let pick = |seed| {
            let mut host = TestHost::new(Keypair::generate().peer_id(), now, seed);
            for p in &peers {
                host.connect(info(*p, now));
            }
            let report =
                host.ctx(&Ticker).broadcast_randomly(4, Opcode::app(1000).unwrap(), Bytes::new());
            report.sent
        };
        let first = pick(7);
        assert_eq!(first.len(), 4);
        let mut dedup = first.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 4, "no peer twice");
        assert_eq!(pick(7), first, "same seed, same choice");
        let mut host = TestHost::new(Keypair::generate().peer_id(), now, 1);
        host.connect(info(peers[0], now));
        let all = host.ctx(&Ticker).broadcast_randomly(5, Opcode::app(1000).unwrap(), Bytes::new());
        assert_eq!(all.sent, vec![peers[0]], "n larger than the peer count sends to all");
    }

    #[test]
    fn requests_are_tracked_and_abandoned_on_failure() {
        let now = Instant::now();
        let a = Keypair::generate().peer_id();
        let mut host = TestHost::new(Keypair::generate().peer_id(), now, 1);
        host.connect(info(a, now));
        let id = host
            .ctx(&Ticker)
            .request(&a, Opcode::PING, Bytes::new(), Duration::from_secs(1))
            .unwrap();
        assert!(host.requests.contains_key(&id));
        assert_eq!(host.sent[0].1.kind, FrameKind::Request { id: id.0 });
        host.full.push(a);
        let err = host.ctx(&Ticker).request(&a, Opcode::PING, Bytes::new(), Duration::from_secs(1));
        assert_eq!(err, Err(SendError::Full));
        assert_eq!(host.requests.len(), 1, "the failed request is forgotten");
        let stranger = Keypair::generate().peer_id();
        assert_eq!(
            host.ctx(&Ticker).try_send(&stranger, Opcode::PING, Bytes::new()),
            Err(SendError::NotConnected)
        );
    }
}
