//! Frames to protocols, responses to whoever waits, protocol commands to the node.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_peers::ConnId;
use sinew_protocol::{
    Command as ProtocolCommand, Handled, Message, RequestFailure, RequestId, Response,
};
use sinew_types::PeerId;

use super::Driver;
use super::core::UserPing;
use crate::RequestError;
use crate::events::Event;
use crate::state::{NetworkState, PeerState};

impl Driver {
    /// A frame from a connection.
    pub(super) fn on_frame(&mut self, conn: ConnId, frame: Frame) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let peer = entry.peer;
        let authorized = entry.stats.is_authorized();
        if frame.opcode.is_app() {
            self.core.peers.activity(conn, self.core.now);
        }
        match frame.kind {
            FrameKind::Response { id } => {
                self.on_response(peer, conn, id, frame.opcode, Ok(frame.payload))
            }
            FrameKind::Error { id, status } => {
                self.on_response(peer, conn, id, frame.opcode, Err(status))
            }
            kind => {
                if !authorized && !self.core.shared.config.access.allows_unauthorized(frame.opcode)
                {
                    self.reply_error(conn, frame.opcode, kind, Status::UNAUTHORIZED);
                    return;
                }
                let Some(protocol) = self.core.route(frame.opcode) else {
                    self.reply_error(conn, frame.opcode, kind, Status::UNKNOWN_OPCODE);
                    return;
                };
                let msg = Message { peer, opcode: frame.opcode, kind, payload: frame.payload };
                let mut handled = Handled::No;
                // System-lane replies the protocol makes go back on this connection.
                self.core.replying_to = Some((peer, conn));
                self.call(protocol, |p, ctx| handled = p.on_message(ctx, msg));
                self.core.replying_to = None;
                match (handled, kind) {
                    (Handled::Yes, FrameKind::Acked { id }) => {
                        let ack = Frame::new(Opcode::ACK, FrameKind::Response { id }, Bytes::new());
                        let _ = self.core.send_system(conn, ack);
                    }
                    (Handled::Yes, _) => {}
                    (Handled::No, kind) => {
                        self.reply_error(conn, frame.opcode, kind, Status::UNKNOWN_OPCODE)
                    }
                }
            }
        }
    }

    /// Answers a frame nobody could take, on the connection it came on. Error frames are never
    /// answered (no loops); a message without an id is answered with id 0.
    fn reply_error(&mut self, conn: ConnId, opcode: Opcode, kind: FrameKind, status: Status) {
        let id = match kind {
            FrameKind::Response { .. } | FrameKind::Error { .. } => return,
            other => other.id().unwrap_or(0),
        };
        let frame = Frame::new(opcode, FrameKind::Error { id, status }, Bytes::new());
        if self.core.send_system(conn, frame).is_err() {
            tracing::debug!(%conn, %opcode, "could not queue an error reply");
        }
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        conn: ConnId,
        id: u64,
        opcode: Opcode,
        result: Result<Bytes, Status>,
    ) {
        // Pings are matched by connection and id, and must echo their payload: no other
        // connection or peer can answer them.
        if opcode == Opcode::PONG {
            if let Some(&nonce) = self.core.pings.get(&(conn, id)) {
                if let Ok(payload) = &result
                    && payload[..] == nonce.to_le_bytes()
                {
                    self.core.pings.remove(&(conn, id));
                    self.core.peers.pong(conn, nonce, self.core.now);
                }
                return;
            }
            if let Some(ping) = self.core.user_pings.get(&(conn, id)) {
                if let Ok(payload) = &result
                    && payload[..] == ping.payload
                    && let Some(ping) = self.core.user_pings.remove(&(conn, id))
                {
                    self.core.user_ping_deadlines.remove(&(ping.deadline, conn, id));
                    let rtt = self.core.now.saturating_duration_since(ping.sent_at);
                    let _ = ping.reply.send(Ok(rtt));
                }
                return;
            }
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

    /// Sends an application ping on the peer's active connection's system lane.
    pub(super) fn user_ping(
        &mut self,
        peer: PeerId,
        reply: tokio::sync::oneshot::Sender<Result<std::time::Duration, RequestError>>,
    ) {
        let Some(conn) = self.core.peers.active_connection(&peer) else {
            let _ = reply.send(Err(RequestError::Send(sinew_protocol::SendError::NotConnected)));
            return;
        };
        let id = self.core.shared.next_request_id();
        let payload: [u8; 8] = rand::Rng::next_u64(&mut self.core.rng).to_le_bytes();
        let frame =
            Frame::new(Opcode::PING, FrameKind::Request { id }, Bytes::copy_from_slice(&payload));
        if let Err(e) = self.core.send_system(conn, frame) {
            let _ = reply.send(Err(RequestError::Send(e)));
            return;
        }
        let now = self.core.now;
        let deadline = now + self.core.shared.config.request_timeout;
        self.core.user_ping_deadlines.insert((deadline, conn, id));
        self.core
            .user_pings
            .insert((conn, id), UserPing { payload, sent_at: now, deadline, reply });
    }

    /// Applies what protocols queued. Returns whether there was anything.
    pub(super) fn process_protocol_commands(&mut self) -> bool {
        let commands = std::mem::take(&mut self.core.pending_commands);
        let any = !commands.is_empty();
        for (_protocol, command) in commands {
            match command {
                ProtocolCommand::Authorize(peer) => self.authorize(peer),
                ProtocolCommand::Disconnect(peer, code, message) => {
                    self.disconnect(peer, code, message)
                }
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
            pending_requests: self.core.shared.waiter_count()
                + self.core.requests.len()
                + self.core.user_pings.len(),
            large_receive_bytes: self.core.shared.large_in.used(),
            nat: self.core.shared.nat_state(),
        }
    }
}
