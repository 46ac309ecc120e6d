//! The host's own protocols: ordinary [`Protocol`]s, run like everyone else's. (Identify is
//! the host's own bookkeeping: see `identify.rs`.)

use std::time::Duration;

use bytes::Bytes;
use sinew_codec::{Opcode, OpcodeRange};
use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol, TimerId};

/// Answers pings: a PING request is answered with a PONG response carrying the same payload.
/// (Liveness pings are scheduled by the peer manager; `Node::ping` measures a round trip.)
pub(crate) struct Ping;

impl Protocol for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn opcodes(&self) -> Opcodes {
        // PING and PONG; an unsolicited PONG (not a response) is accepted and ignored.
        Opcodes::ranges([OpcodeRange::single(Opcode::PING), OpcodeRange::single(Opcode::PONG)])
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        if msg.opcode == Opcode::PING {
            let _ = ctx.reply_as(&msg, Opcode::PONG, msg.payload.clone());
        }
        Handled::Yes
    }
}

/// Keepalive: every `interval` it sends an empty KEEPALIVE to each connected peer (one timer
/// for the whole node, not one per connection), and answers the peer's with a
/// KEEPALIVE_RESPONSE. Neither counts as application traffic. It keeps NAT bindings and
/// middleboxes from timing out a connection whose pings are disabled or slower.
pub(crate) struct Keepalive {
    pub(crate) interval: Option<Duration>,
}

impl Protocol for Keepalive {
    fn name(&self) -> &'static str {
        "keepalive"
    }

    fn opcodes(&self) -> Opcodes {
        OpcodeRange::new(Opcode::KEEPALIVE, Opcode::KEEPALIVE_RESPONSE)
            .map(Opcodes::from)
            .unwrap_or_default()
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(interval) = self.interval {
            ctx.set_timer_in(interval);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _timer: TimerId) {
        for peer in ctx.peers().to_vec() {
            // A full queue already carries traffic: skipping is fine.
            let _ = ctx.try_send(&peer, Opcode::KEEPALIVE, Bytes::new());
        }
        if let Some(interval) = self.interval {
            ctx.set_timer_in(interval);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        if msg.opcode == Opcode::KEEPALIVE {
            let _ = ctx.try_send(&msg.peer, Opcode::KEEPALIVE_RESPONSE, Bytes::new());
        }
        Handled::Yes
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use sinew_protocol::testing::TestHost;
    use sinew_protocol::{FrameKind, PeerInfo};
    use sinew_types::{Direction, Keypair};
    use std::time::Instant;

    #[test]
    fn keepalive_sends_on_its_interval_and_answers() {
        let now = Instant::now();
        let peer = Keypair::generate().peer_id();
        let mut host = TestHost::new(Keypair::generate().peer_id(), now, 1);
        host.connect(PeerInfo {
            peer,
            direction: Direction::Inbound,
            remote_addr: "tcp://127.0.0.1:1".parse().unwrap(),
            connected_at: now,
            identity: None,
            authorized: true,
        });
        let mut keepalive = Keepalive { interval: Some(Duration::from_secs(20)) };
        keepalive.on_start(&mut host.ctx(&Keepalive { interval: None }));
        host.advance(&mut keepalive, Duration::from_secs(45));
        let sent = host.take_sent();
        assert_eq!(sent.len(), 2, "at 20 s and 40 s");
        assert!(sent.iter().all(|(p, f)| *p == peer && f.opcode == Opcode::KEEPALIVE));
        let msg = Message {
            peer,
            opcode: Opcode::KEEPALIVE,
            kind: FrameKind::Message,
            payload: Bytes::new(),
        };
        assert_eq!(
            keepalive.on_message(&mut host.ctx(&Keepalive { interval: None }), msg),
            Handled::Yes
        );
        assert_eq!(host.take_sent()[0].1.opcode, Opcode::KEEPALIVE_RESPONSE);
    }
}
