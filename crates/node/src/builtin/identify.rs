//! Identify: each side tells the other its agent, listen addresses, the address it sees the
//! other at, its role, its opcodes and its boot nonce, as soon as a peer connects.

use std::sync::Arc;

use sinew_codec::Opcode;
use sinew_codec::messages::{
    DisconnectCode, Identify as IdentifyMessage, MAX_ADDR_TEXT, MAX_OPCODE_RANGES, MessageBody as _,
};
use sinew_protocol::{Ctx, Handled, Message, Opcodes, PeerInfo, Protocol};
use sinew_types::Addr;

use crate::shared::Shared;

/// The identify protocol (opcode 19).
pub(crate) struct Identify {
    shared: Arc<Shared>,
}

impl Identify {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// What we tell `peer`, within the limits every reader decodes with (so it is never
    /// refused): at most 32 addresses of at most 255 bytes of text, at most 256 opcode ranges
    /// (the agent and role lengths are checked when the node starts).
    fn message_for(&self, peer: &PeerInfo) -> IdentifyMessage {
        let shared = &self.shared;
        let mut opcodes = shared.local_opcodes.read().unwrap_or_else(|e| e.into_inner()).clone();
        opcodes.truncate(MAX_OPCODE_RANGES);
        IdentifyMessage {
            protocol_version: 1,
            agent: shared.config.agent.clone(),
            boot_nonce: shared.boot_nonce,
            listen_addrs: shared
                .advertised_addrs()
                .into_iter()
                .filter(fits)
                .take(sinew_types::MAX_RECORD_ADDRS)
                .collect(),
            observed_addr: Some(peer.remote_addr.clone()).filter(fits),
            role: shared.config.role.clone(),
            opcodes,
            record: None,
        }
    }
}

/// Whether an address's text fits identify's bound.
fn fits(addr: &Addr) -> bool {
    addr.to_string().len() <= MAX_ADDR_TEXT
}

impl Protocol for Identify {
    fn name(&self) -> &'static str {
        "identify"
    }

    fn opcodes(&self) -> Opcodes {
        Opcode::IDENTIFY.into()
    }

    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        let body = self.message_for(peer).encode();
        if ctx.try_send(&peer.peer, Opcode::IDENTIFY, body).is_err() {
            tracing::debug!(peer = %peer.peer, "could not queue identify");
        }
    }

    fn on_addresses_changed(&mut self, ctx: &mut Ctx<'_>, _addrs: &[Addr]) {
        // Everyone connected learns the new addresses (each with the address we see it at).
        for peer in ctx.peers().to_vec() {
            if let Some(info) = ctx.peer(&peer).cloned() {
                self.on_peer_connected(ctx, &info);
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        match IdentifyMessage::decode(msg.payload) {
            Ok(identify) => ctx.set_identity(&msg.peer, Arc::new(identify)),
            Err(error) => {
                tracing::debug!(peer = %msg.peer, %error, "malformed identify");
                let reason = format!("malformed identify: {error}");
                ctx.disconnect_because(&msg.peer, DisconnectCode::PROTOCOL_ERROR, &reason);
            }
        }
        Handled::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address readers would refuse (over 255 bytes of text) is left out, not sent.
    #[test]
    fn only_addresses_peers_accept_are_announced() {
        let label = "a".repeat(60);
        let host = format!("{label}.{label}.{label}.example");
        let peer = sinew_types::Keypair::generate().peer_id();
        let long: Addr = format!("tcp://{host}:4001").parse::<Addr>().unwrap().with_peer(peer);
        assert!(long.to_string().len() > MAX_ADDR_TEXT);
        assert!(!fits(&long));
        let short: Addr = "tcp://192.0.2.1:4001".parse().unwrap();
        assert!(fits(&short));
        let message = IdentifyMessage {
            protocol_version: 1,
            agent: String::new(),
            boot_nonce: 0,
            listen_addrs: vec![short, long].into_iter().filter(fits).collect(),
            observed_addr: None,
            role: String::new(),
            opcodes: Vec::new(),
            record: None,
        };
        assert!(IdentifyMessage::decode(message.encode()).is_ok(), "peers decode what we send");
    }
}
