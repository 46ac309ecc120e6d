//! Frames to protocols, responses to whoever waits, protocol commands to the node.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use sinew_codec::messages::{Disconnect, DisconnectCode, MessageBody as _};
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_peers::{ConnId, RemoteDisconnect};
use sinew_protocol::{
    Command as ProtocolCommand, Handled, Message, RequestFailure, RequestId, Response,
};
use sinew_types::PeerId;

use super::Driver;
use crate::RequestError;
use crate::events::Event;
use crate::state::{NetworkState, PeerState};

impl Driver {
    /// A frame from a connection.
    pub(super) fn on_frame(&mut self, conn: ConnId, frame: Frame) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let peer = entry.peer;
        let authorized = entry.stats.is_authorized();
        if frame.opcode == Opcode::DISCONNECT {
            let code = Disconnect::decode(frame.payload)
                .map_or(DisconnectCode::PROTOCOL_ERROR, |d| d.code);
            let kind = if code == DisconnectCode::DUPLICATE {
                RemoteDisconnect::Duplicate
            } else {
                RemoteDisconnect::Other
            };
            self.core.peers.disconnect_received(conn, kind, self.core.now);
            return;
        }
        if frame.opcode.is_app() {
            self.core.peers.activity(conn, self.core.now);
        }
        match frame.kind {
            FrameKind::Response { id } => {
                self.on_response(peer, id, frame.opcode, Ok(frame.payload))
            }
            FrameKind::Error { id, status } => {
                self.on_response(peer, id, frame.opcode, Err(status))
            }
            kind => {
                if frame.opcode.is_app() && !authorized {
                    self.reply_error(peer, frame.opcode, kind, Status::UNAUTHORIZED);
                    return;
                }
                let Some(protocol) = self.core.route(frame.opcode) else {
                    self.reply_error(peer, frame.opcode, kind, Status::UNKNOWN_OPCODE);
                    return;
                };
                let msg = Message { peer, opcode: frame.opcode, kind, payload: frame.payload };
                let mut handled = Handled::No;
                self.call(protocol, |p, ctx| handled = p.on_message(ctx, msg));
                match (handled, kind) {
                    (Handled::Yes, FrameKind::Acked { id }) => {
                        let ack = Frame::new(Opcode::ACK, FrameKind::Response { id }, Bytes::new());
                        let _ = self.core.queue_frame(&peer, ack);
                    }
                    (Handled::Yes, _) => {}
                    (Handled::No, kind) => {
                        self.reply_error(peer, frame.opcode, kind, Status::UNKNOWN_OPCODE)
                    }
                }
            }
        }
    }

    /// Answers a frame nobody could take. Error frames are never answered (no loops); a
    /// message without an id is answered with id 0.
    fn reply_error(&mut self, peer: PeerId, opcode: Opcode, kind: FrameKind, status: Status) {
        let id = match kind {
            FrameKind::Response { .. } | FrameKind::Error { .. } => return,
            other => other.id().unwrap_or(0),
        };
        let frame = Frame::new(opcode, FrameKind::Error { id, status }, Bytes::new());
        if self.core.queue_frame(&peer, frame).is_err() {
            tracing::debug!(%peer, %opcode, "could not queue an error reply");
        }
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        id: u64,
        opcode: Opcode,
        result: Result<Bytes, Status>,
    ) {
        if let Some((conn, nonce)) = self.core.pings.remove(&id) {
            if result.is_ok() {
                self.core.peers.pong(conn, nonce, self.core.now);
            }
            return;
        }
        if let Some(request) = self.core.requests.remove(&id) {
            if request.peer != peer {
                // Only the peer we asked may answer; put it back for the right one.
                self.core.requests.insert(id, request);
                return;
            }
            self.core.request_deadlines.remove(&(request.deadline, id));
            let response = Response {
                peer,
                id: RequestId(id),
                opcode: request.opcode,
                result: result.map_err(RequestFailure::Remote),
            };
            self.call(request.protocol, |p, ctx| p.on_response(ctx, response));
            return;
        }
        if let Some(waiter) = self.core.shared.take_waiter(id) {
            if waiter.peer != peer {
                self.core.shared.add_waiter(id, waiter);
                return;
            }
            let _ = waiter.tx.send(result.map_err(RequestError::Remote));
            return;
        }
        if let (0, Err(status)) = (id, result) {
            self.core.shared.emit(Event::RemoteError { peer, opcode, status });
        }
    }

    /// Applies what protocols queued. Returns whether there was anything.
    pub(super) fn process_protocol_commands(&mut self) -> bool {
        let commands = std::mem::take(&mut self.core.pending_commands);
        let any = !commands.is_empty();
        for (_protocol, command) in commands {
            match command {
                ProtocolCommand::Authorize(peer) => self.authorize(peer),
                ProtocolCommand::Disconnect(peer, code) => self.disconnect(peer, code),
                ProtocolCommand::Dial(addr) => {
                    let (tx, _) = tokio::sync::oneshot::channel();
                    self.dial(addr, tx);
                }
                ProtocolCommand::AddPeer(addr) => {
                    let _ = self.core.peers.add_peer(addr, self.core.now);
                }
                ProtocolCommand::Emit(event) => self.core.shared.emit(Event::Protocol(event)),
                ProtocolCommand::Identified(peer, identity) => {
                    let Some(info) = self.core.info.get_mut(&peer) else { continue };
                    info.identity = Some(identity.clone());
                    let info = info.clone();
                    for addr in identity.listen_addrs.iter().rev() {
                        self.core.remember_addr(peer, addr.clone());
                    }
                    self.call_all(|p, ctx| p.on_peer_identified(ctx, &info));
                    self.core.shared.emit(Event::PeerIdentified {
                        peer,
                        role: identity.role.clone(),
                        agent: identity.agent.clone(),
                        listen_addrs: identity.listen_addrs.clone(),
                    });
                }
                _ => {}
            }
        }
        any
    }

    pub(super) fn network_state(&self) -> NetworkState {
        let now = self.core.now;
        let peers = self
            .core
            .info
            .values()
            .map(|info| {
                let conn = self.core.peers.active_connection(&info.peer);
                let view = conn.and_then(|c| self.core.peers.connection(c));
                let stats = conn.and_then(|c| self.core.conns.get(&c)).map(|e| e.stats.clone());
                let load = |f: fn(&crate::stats::ConnStats) -> u64| stats.as_deref().map_or(0, f);
                PeerState {
                    peer: info.peer,
                    addr: info.remote_addr.clone(),
                    direction: info.direction,
                    role: info.role().to_owned(),
                    agent: info.identity.as_ref().map(|i| i.agent.clone()).unwrap_or_default(),
                    listen_addrs: info
                        .identity
                        .as_ref()
                        .map(|i| i.listen_addrs.clone())
                        .unwrap_or_default(),
                    rtt: view.and_then(|v| v.rtt),
                    bytes_in: load(|s| s.bytes_in.load(Ordering::Relaxed)),
                    bytes_out: load(|s| s.bytes_out.load(Ordering::Relaxed)),
                    msgs_in: load(|s| s.msgs_in.load(Ordering::Relaxed)),
                    msgs_out: load(|s| s.msgs_out.load(Ordering::Relaxed)),
                    age: now.saturating_duration_since(info.connected_at),
                    authorized: info.authorized,
                    queued_bytes: self.core.queues.get(&info.peer).map_or(0, |q| q.queued_bytes()),
                    dropped: self.core.queues.get(&info.peer).map_or(0, |q| q.dropped()),
                }
            })
            .collect();
        let counts = self.core.peers.counts();
        NetworkState {
            local: self.core.shared.local,
            listen_addrs: self.core.shared.listen_addrs(),
            peers,
            connections: counts.total,
            inbound: counts.inbound,
            outbound: counts.outbound,
            pending_handshakes: counts.pending_handshakes,
            nat: self.core.shared.nat_state(),
        }
    }
}
