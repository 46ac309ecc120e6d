//! Identify: each side tells the other its agent, listen addresses, the address it sees the
//! other at, its role, its opcodes and its boot nonce, as soon as a peer connects.

use std::sync::Arc;

use sinew_codec::Opcode;
use sinew_codec::messages::{DisconnectCode, Identify as IdentifyMessage, MessageBody as _};
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

    fn message_for(&self, peer: &PeerInfo) -> IdentifyMessage {
        let shared = &self.shared;
        IdentifyMessage {
            protocol_version: 1,
            agent: shared.config.agent.clone(),
            boot_nonce: shared.boot_nonce,
            listen_addrs: shared
                .advertised_addrs()
                .into_iter()
                .take(sinew_types::MAX_RECORD_ADDRS)
                .collect(),
            observed_addr: Some(peer.remote_addr.clone()),
            role: shared.config.role.clone(),
            opcodes: shared.local_opcodes.read().unwrap_or_else(|e| e.into_inner()).clone(),
            record: None,
        }
    }
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
                ctx.disconnect(&msg.peer, DisconnectCode::PROTOCOL_ERROR);
            }
        }
        Handled::Yes
    }
}
