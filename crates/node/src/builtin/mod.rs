//! The node's own protocols. They are ordinary [`Protocol`]s run by the same driver as
//! everyone else's.

mod identify;
mod inbox;

use bytes::Bytes;
use sinew_codec::{Opcode, OpcodeRange};
use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol};

pub(crate) use identify::Identify;
pub use inbox::Inbox;
pub(crate) use inbox::InboxProtocol;

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

/// Answers keepalives (KEEPALIVE -> KEEPALIVE_RESPONSE). A connection sends one when its
/// control stream has been quiet for the keepalive interval; neither counts as application
/// traffic.
pub(crate) struct Keepalive;

impl Protocol for Keepalive {
    fn name(&self) -> &'static str {
        "keepalive"
    }

    fn opcodes(&self) -> Opcodes {
        OpcodeRange::new(Opcode::KEEPALIVE, Opcode::KEEPALIVE_RESPONSE)
            .map(Opcodes::from)
            .unwrap_or_default()
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        if msg.opcode == Opcode::KEEPALIVE {
            let _ = ctx.try_send(&msg.peer, Opcode::KEEPALIVE_RESPONSE, Bytes::new());
        }
        Handled::Yes
    }
}
