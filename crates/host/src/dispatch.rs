//! Frames to protocols, responses to whoever waits.

use std::time::Instant;

use bytes::Bytes;
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_peers::ConnId;
use sinew_protocol::{Handled, Message, RequestFailure, RequestId, Response};
use sinew_types::PeerId;

use crate::Host;
use crate::identify::IDENTIFY_ROUTE;
use crate::output::{HostEvent, Output, PingId};

impl Host {
    /// A frame arrived on `conn` (on any lane). Requests and messages go to the protocol
    /// owning the opcode (an acked message it handled is acked; one nobody handles is answered
    /// `UNKNOWN_OPCODE`, one an unauthorized peer may not send `UNAUTHORIZED`); responses go
    /// to the ping, protocol request or application waiting on them.
    pub fn handle_frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        self.core.now = now;
        self.on_frame(conn, frame);
        self.settle();
    }

    fn on_frame(&mut self, conn: ConnId, frame: Frame) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let peer = entry.peer;
        let authorized = self.core.peers.is_authorized(conn);
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
                if !authorized && !self.core.config.access.allows_unauthorized(frame.opcode) {
                    self.reply_error(conn, frame.opcode, kind, Status::UNAUTHORIZED);
                    return;
                }
                let Some(protocol) = self.core.route(frame.opcode) else {
                    self.reply_error(conn, frame.opcode, kind, Status::UNKNOWN_OPCODE);
                    return;
                };
                if protocol == IDENTIFY_ROUTE {
                    self.on_identify(peer, frame.payload);
                    return;
                }
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
        let core = &mut self.core;
        // Pings are matched by connection and id, and must echo their payload: no other
        // connection or peer can answer them.
        if opcode == Opcode::PONG {
            if let Some(&nonce) = core.pings.get(&(conn, id)) {
                if let Ok(payload) = &result
                    && payload[..] == nonce.to_le_bytes()
                {
                    core.pings.remove(&(conn, id));
                    core.peers.pong(conn, nonce, core.now);
                }
                return;
            }
            if let Some(ping) = core.user_pings.get(&(conn, id)) {
                if let Ok(payload) = &result
                    && payload[..] == ping.payload
                    && let Some(ping) = core.user_pings.remove(&(conn, id))
                {
                    core.user_ping_deadlines.remove(&(ping.deadline, conn, id));
                    let rtt = core.now.saturating_duration_since(ping.sent_at);
                    core.outputs.push_back(Output::PingDone { id: PingId(id), result: Ok(rtt) });
                }
                return;
            }
        }
        if let Some(request) = core.requests.remove(&id) {
            if request.peer != peer {
                // Only the peer we asked may answer; put it back for the right one.
                core.requests.insert(id, request);
                return;
            }
            core.request_deadlines.remove(&(request.deadline, id));
            let response = Response {
                peer,
                id: RequestId(id),
                opcode: request.opcode,
                result: result.map_err(RequestFailure::Remote),
            };
            self.call(request.protocol, |p, ctx| p.on_response(ctx, response));
            return;
        }
        if id >= crate::core::HOST_REQUEST_IDS {
            // One of ours that ended (a late answer): nobody else may take it.
            return;
        }
        match (id, result) {
            (0, Err(status)) => core.outputs.push_back(Output::Event(HostEvent::RemoteError {
                peer,
                opcode,
                status,
            })),
            (id, result) => core.outputs.push_back(Output::Response { peer, id, opcode, result }),
        }
    }

    /// Ends a protocol's request with a failure.
    pub(crate) fn fail_request(&mut self, id: u64, failure: RequestFailure) {
        let Some(request) = self.core.requests.remove(&id) else { return };
        self.core.request_deadlines.remove(&(request.deadline, id));
        let response = Response {
            peer: request.peer,
            id: RequestId(id),
            opcode: request.opcode,
            result: Err(failure),
        };
        self.call(request.protocol, |p, ctx| p.on_response(ctx, response));
    }
}
