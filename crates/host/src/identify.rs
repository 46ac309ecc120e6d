//! Identify (opcode 19): each side tells the other its agent, listen addresses, the address it
//! sees the other at, its role, its opcodes and its boot nonce, as soon as a peer connects.
//! It is the host's own bookkeeping (what a peer said becomes its [`PeerInfo::identity`]), so
//! it is not a protocol: no protocol can forge another peer's identity.

use std::sync::Arc;

use sinew_codec::messages::{
    DisconnectCode, Identify as IdentifyMessage, MAX_ADDR_TEXT, MAX_OPCODE_RANGES, MessageBody as _,
};
use sinew_codec::{Frame, Opcode};
use sinew_protocol::{PeerInfo, ProtocolId};
use sinew_types::{Addr, PeerId};

use crate::Host;
use crate::output::{HostEvent, Output};

/// The route that names identify in the opcode table.
pub(crate) const IDENTIFY_ROUTE: ProtocolId = ProtocolId(u32::MAX);

/// Whether an address's text fits identify's bound.
fn fits(addr: &Addr) -> bool {
    addr.to_string().len() <= MAX_ADDR_TEXT
}

impl Host {
    /// What we tell `peer`, within the limits every reader decodes with (so it is never
    /// refused): at most 32 addresses of at most 255 bytes of text, at most 256 opcode ranges
    /// (the agent and role lengths are the driver's to check).
    fn identify_for(&self, peer: &PeerInfo) -> IdentifyMessage {
        let core = &self.core;
        let mut opcodes: Vec<_> = core.routes.iter().map(|(range, _)| *range).collect();
        opcodes.truncate(MAX_OPCODE_RANGES);
        IdentifyMessage {
            protocol_version: 1,
            agent: core.config.agent.clone(),
            boot_nonce: core.config.boot_nonce,
            listen_addrs: core
                .advertised
                .iter()
                .filter(|a| fits(a))
                .take(sinew_types::MAX_RECORD_ADDRS)
                .cloned()
                .collect(),
            observed_addr: Some(peer.remote_addr.clone()).filter(fits),
            role: core.config.role.clone(),
            opcodes,
            record: None,
        }
    }

    /// Tells `peer` who we are.
    pub(crate) fn send_identify(&mut self, peer: &PeerId) {
        let Some(info) = self.core.info.get(peer) else { return };
        let body = self.identify_for(info).encode();
        if self.core.queue_frame(peer, Frame::message(Opcode::IDENTIFY, body)).is_err() {
            tracing::debug!(%peer, "could not queue identify");
        }
    }

    /// A peer's identify arrived: record it, remember its addresses, tell the protocols and
    /// the application. A malformed one closes the connection.
    pub(crate) fn on_identify(&mut self, peer: PeerId, payload: bytes::Bytes) {
        let identity = match IdentifyMessage::decode(payload) {
            Ok(identity) => Arc::new(identity),
            Err(error) => {
                tracing::debug!(%peer, %error, "malformed identify");
                let reason = format!("malformed identify: {error}");
                let _ = self.disconnect(peer, DisconnectCode::PROTOCOL_ERROR, reason);
                return;
            }
        };
        let Some(info) = self.core.info.get_mut(&peer) else { return };
        info.identity = Some(identity.clone());
        let info = info.clone();
        for addr in identity.listen_addrs.iter().rev() {
            self.core.remember_addr(peer, addr.clone());
        }
        self.call_all(|p, ctx| p.on_peer_identified(ctx, &info));
        self.core.outputs.push_back(Output::Event(HostEvent::PeerIdentified {
            peer,
            role: identity.role.clone(),
            agent: identity.agent.clone(),
            listen_addrs: identity.listen_addrs.clone(),
        }));
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
