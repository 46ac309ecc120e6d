//! Connections coming and going: the driver's reports in, the peer manager's decisions out.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, Opcode};
use sinew_peers::{
    Action, ConnId, ConnState, DialFailure, Established, Reason as PeersReason, Refusal,
    RemoteDisconnect,
};
use sinew_protocol::{PeerInfo, Reason, RequestFailure};
use sinew_types::PeerId;

use crate::Host;
use crate::core::ConnEntry;
use crate::output::{HostEvent, Lane, Output, PingFailure, PingId};

/// Other addresses of a peer tried after the first when dialling it (of its most recent ones):
/// a peer that advertises many addresses does not make every redial a burst of dials. Three:
/// room for QUIC and TCP over IPv6 and IPv4.
const MAX_ALTERNATIVES: usize = 3;

/// The code a close for this reason says.
fn disconnect_code(reason: PeersReason) -> DisconnectCode {
    match reason {
        PeersReason::Shutdown => DisconnectCode::SHUTDOWN,
        PeersReason::Duplicate => DisconnectCode::DUPLICATE,
        PeersReason::Idle => DisconnectCode::IDLE,
        PeersReason::PingTimeout => DisconnectCode::PING_TIMEOUT,
        PeersReason::Unauthorized => DisconnectCode::UNAUTHORIZED,
        PeersReason::Replaced | PeersReason::Restarted => DisconnectCode::REPLACED,
        PeersReason::Removed => DisconnectCode::REMOVED,
        _ => DisconnectCode::PROTOCOL_ERROR,
    }
}

/// Whether a close for this reason delivers what was already written first: every close but
/// those where the remote is unresponsive or not who it should be.
fn graceful(reason: PeersReason) -> bool {
    !matches!(reason, PeersReason::PingTimeout | PeersReason::UnexpectedPeer)
}

impl Host {
    /// A socket arrived on a listener. `Ok`: run its handshake as connection `conn`. `Err`:
    /// refuse it (no handshake work; the dialler may be told the limit).
    pub fn handle_inbound(&mut self, remote: SocketAddr, now: Instant) -> Result<ConnId, Refusal> {
        self.core.now = now;
        let result = self.core.peers.inbound(remote, now);
        if let Err(refusal) = &result {
            let event = HostEvent::InboundRefused { remote, refusal: refusal.clone() };
            self.core.outputs.push_back(Output::Event(event));
        }
        self.settle();
        result
    }

    /// A dial failed before a connection was established.
    pub fn handle_dial_failed(&mut self, conn: ConnId, failure: DialFailure, now: Instant) {
        self.core.now = now;
        if self.core.dial_owners.contains_key(&conn) {
            self.core.dial_failures.insert(conn, failure);
        }
        self.core.peers.dial_failed(conn, failure, now);
        self.settle();
    }

    /// An inbound handshake failed.
    pub fn handle_handshake_failed(&mut self, conn: ConnId, now: Instant) {
        self.core.now = now;
        self.core.peers.handshake_failed(conn, now);
        self.settle();
    }

    /// A connection finished its handshake. `true`: the driver runs it (and reports its end
    /// with [`Host::handle_closed`]); `false`: the host gave it up meanwhile (a close raced
    /// the handshake, or the host is shutting down), and the driver just closes it.
    pub fn handle_established(
        &mut self,
        conn: ConnId,
        established: Established,
        now: Instant,
    ) -> bool {
        self.core.now = now;
        let pending =
            self.core.peers.connection(conn).is_some_and(|view| view.state == ConnState::Pending);
        if !pending || self.core.shutting_down {
            if self.core.peers.connection(conn).is_some() {
                self.core.peers.connection_closed(conn, now);
            }
            self.settle();
            return false;
        }
        if established.direction == sinew_types::Direction::Outbound {
            self.core.remember_addr(established.peer, established.remote_addr.clone());
        }
        let entry = ConnEntry {
            peer: established.peer,
            direction: established.direction,
            remote_addr: established.remote_addr.clone(),
            system_used: 0,
        };
        self.core.conns.insert(conn, Box::new(entry));
        self.core.peers.handshake_succeeded(conn, established, now);
        self.settle();
        true
    }

    /// The remote said goodbye on `conn`.
    pub fn handle_goodbye(&mut self, conn: ConnId, code: DisconnectCode, now: Instant) {
        self.core.now = now;
        let kind = if code == DisconnectCode::DUPLICATE {
            RemoteDisconnect::Duplicate
        } else {
            RemoteDisconnect::Other
        };
        self.core.peers.disconnect_received(conn, kind, now);
        self.settle();
    }

    /// Application traffic on `conn` (for the idle deadline).
    pub fn handle_activity(&mut self, conn: ConnId, now: Instant) {
        self.core.now = now;
        self.core.peers.activity(conn, now);
        self.settle();
    }

    /// `conn` has `count` application streams open now.
    pub fn handle_streams(&mut self, conn: ConnId, count: u32, now: Instant) {
        self.core.now = now;
        self.core.peers.streams_open(conn, count, now);
        self.settle();
    }

    /// The connection's writer wrote `bytes` of what the host handed it on `lane`: that much
    /// credit comes back, and frames waiting for it go out.
    pub fn handle_write_credit(&mut self, conn: ConnId, lane: Lane, bytes: usize) {
        let Some(entry) = self.core.conns.get_mut(&conn) else { return };
        match lane {
            Lane::System => entry.system_used = entry.system_used.saturating_sub(bytes),
            Lane::Message => {
                let peer = entry.peer;
                self.core.protocol_written(&peer, bytes);
                // Protocols waiting for room hear of it now.
                self.settle();
            }
            Lane::Large(_) => {}
        }
    }

    /// An inbound large transfer started on `conn` (its header arrived): the protocol owning
    /// its opcode hears of it, and may cancel it.
    pub fn handle_transfer_started(
        &mut self,
        conn: ConnId,
        transfer: sinew_protocol::TransferStart,
        now: Instant,
    ) {
        self.core.now = now;
        if self.core.conn_peer_is(conn, transfer.peer)
            && let Some(protocol) = self.core.route(transfer.opcode)
        {
            self.call(protocol, |p, ctx| p.on_transfer_started(ctx, &transfer));
        }
        self.settle();
    }

    /// An established connection ended (after [`Output::Close`], or on its own), as the
    /// connection saw it.
    pub fn handle_closed(&mut self, conn: ConnId, reason: Reason, now: Instant) {
        self.core.now = now;
        if let Some(entry) = self.core.conns.remove(&conn) {
            self.core.close_reasons.insert(entry.peer, reason);
        }
        self.core.pings.retain(|(c, _), _| *c != conn);
        self.fail_user_pings(|c| c == conn);
        self.core.peers.connection_closed(conn, now);
        self.settle();
    }

    /// Time passed: timers, request and ping deadlines, the peer manager's deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.now = now;
        if self.core.peers.poll_timeout().is_some_and(|at| at <= now) {
            self.core.peers.handle_timeout(now);
        }
        while let Some(&(at, timer, protocol)) = self.core.timers.first() {
            if at > now {
                break;
            }
            self.core.timers.pop_first();
            self.core.timer_at.remove(&timer);
            self.call(protocol, |p, ctx| p.on_timer(ctx, timer));
        }
        while let Some(&(at, id)) = self.core.request_deadlines.first() {
            if at > now {
                break;
            }
            self.fail_request(id, RequestFailure::Timeout);
        }
        while let Some(&(at, conn, id)) = self.core.user_ping_deadlines.first() {
            if at > now {
                break;
            }
            self.core.user_ping_deadlines.pop_first();
            if self.core.user_pings.remove(&(conn, id)).is_some() {
                let done = Output::PingDone { id: PingId(id), result: Err(PingFailure::Timeout) };
                self.core.outputs.push_back(done);
            }
        }
        self.settle();
    }

    /// Fails the application pings of the connections `which` picks.
    pub(crate) fn fail_user_pings(&mut self, which: impl Fn(ConnId) -> bool) {
        let ids: Vec<(ConnId, u64)> =
            self.core.user_pings.keys().filter(|(c, _)| which(*c)).copied().collect();
        for key in ids {
            if let Some(ping) = self.core.user_pings.remove(&key) {
                self.core.user_ping_deadlines.remove(&(ping.deadline, key.0, key.1));
                let result = Err(PingFailure::Disconnected);
                self.core.outputs.push_back(Output::PingDone { id: PingId(key.1), result });
            }
        }
    }

    /// Applies the peer manager's actions. Returns whether there were any.
    pub(crate) fn process_peer_actions(&mut self) -> bool {
        let mut any = false;
        while let Some(action) = self.core.peers.poll_action() {
            any = true;
            self.apply(action);
        }
        any
    }

    fn apply(&mut self, action: Action) {
        tracing::debug!(?action, "peer manager");
        let now = self.core.now;
        let outputs = &mut self.core.outputs;
        match action {
            Action::Dial { conn, addr } => {
                // The address asked for and the peer's most recent other addresses, in the
                // order they are best dialled (QUIC first, address families alternating).
                let peer = addr.peer();
                let first = addr.clone().without_peer();
                let mut candidates = vec![first.clone()];
                if let Some(known) = peer.and_then(|peer| self.core.address_book.get(&peer)) {
                    candidates.extend(
                        known.iter().filter(|a| **a != first).take(MAX_ALTERNATIVES).cloned(),
                    );
                }
                let mut ordered =
                    crate::dial_order::dial_order(candidates).into_iter().map(|a| match peer {
                        Some(peer) => a.with_peer(peer),
                        None => a,
                    });
                let addr = ordered.next().unwrap_or(addr);
                let alternatives = ordered.collect();
                outputs.push_back(Output::Dial { conn, addr, alternatives });
            }
            Action::Close { conn, reason } => {
                if self.core.conns.contains_key(&conn) {
                    outputs.push_back(Output::Close {
                        conn,
                        code: disconnect_code(reason),
                        message: reason.to_string(),
                        graceful: graceful(reason),
                    });
                } else if self.core.peers.connection(conn).is_some() {
                    // Still dialling or in its handshake.
                    outputs.push_back(Output::Abort { conn });
                    self.core.peers.connection_closed(conn, now);
                }
            }
            Action::Drain { conn } if self.core.conns.contains_key(&conn) => {
                outputs.push_back(Output::Drain { conn });
            }
            Action::SendPing { conn, nonce } => {
                let id = self.core.next_request_id();
                let payload = Bytes::copy_from_slice(&nonce.to_le_bytes());
                let frame = Frame::new(Opcode::PING, FrameKind::Request { id }, payload);
                // A full system lane drops the ping; the deadline counts it as missed.
                if self.core.send_system(conn, frame).is_ok() {
                    // At most one liveness ping is outstanding per connection.
                    self.core.pings.retain(|(c, _), _| *c != conn);
                    self.core.pings.insert((conn, id), nonce);
                }
            }
            Action::PeerConnected { peer, conn, direction: _ } => self.peer_connected(peer, conn),
            Action::PeerDisconnected { peer, reason } => self.peer_disconnected(peer, reason),
            Action::ConnectionReplaced { peer, old: _, new } => self.activate(peer, new),
            Action::DialSucceeded { conn, peer } => {
                outputs.push_back(Output::DialSucceeded { conn, peer });
                self.dial_ended(conn, Ok(peer));
            }
            Action::DialFailed { conn, addr } => {
                outputs.push_back(Output::DialFailed { conn, addr });
                self.dial_ended(conn, Err(()));
            }
            _ => {}
        }
    }

    /// Makes `conn` the connection carrying `peer`'s queues.
    fn activate(&mut self, peer: PeerId, conn: ConnId) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        if let Some(info) = self.core.info.get_mut(&peer) {
            info.remote_addr = entry.remote_addr.clone();
            info.direction = entry.direction;
        }
        self.core.outputs.push_back(Output::Activate { peer, conn });
        self.core.pump(&peer);
    }

    fn peer_connected(&mut self, peer: PeerId, conn: ConnId) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let info = PeerInfo {
            peer,
            direction: entry.direction,
            remote_addr: entry.remote_addr.clone(),
            connected_at: self.core.now,
            identity: None,
            authorized: self.core.peers.is_authorized(conn),
        };
        if info.authorized {
            self.core.outputs.push_back(Output::Authorized { conn });
        }
        self.core.info.insert(peer, Box::new(info.clone()));
        if let Err(i) = self.core.connected.binary_search(&peer) {
            self.core.connected.insert(i, peer);
        }
        self.activate(peer, conn);
        self.core.close_reasons.remove(&peer);
        self.send_identify(&peer);
        self.call_all(|p, ctx| p.on_peer_connected(ctx, &info));
        self.core.outputs.push_back(Output::Event(HostEvent::PeerConnected {
            peer,
            addr: info.remote_addr.clone(),
            direction: info.direction,
        }));
    }

    fn peer_disconnected(&mut self, peer: PeerId, reason: PeersReason) {
        self.core.info.remove(&peer);
        self.core.writable_wanted.remove(&peer);
        self.core.connected.retain(|p| *p != peer);
        let keep_queue = self.core.peers.persistent_peers().contains(&peer)
            && !self.core.peers.is_shutting_down();
        if !keep_queue {
            self.core.waiting.remove(&peer);
        }
        self.core.outputs.push_back(Output::PeerGone { peer, keep_queue });
        let observed = self.core.close_reasons.remove(&peer);
        let reason = match reason {
            PeersReason::Shutdown => Reason::Shutdown,
            PeersReason::Idle => Reason::Idle,
            PeersReason::PingTimeout => Reason::PingTimeout,
            PeersReason::Unauthorized => Reason::Unauthorized,
            PeersReason::Replaced | PeersReason::Restarted => Reason::Restarted,
            PeersReason::Removed => Reason::Removed,
            _ => observed.unwrap_or(Reason::ConnectionLost),
        };
        let failed: Vec<u64> =
            self.core.requests.iter().filter(|(_, r)| r.peer == peer).map(|(id, _)| *id).collect();
        for id in failed {
            self.fail_request(id, RequestFailure::Disconnected);
        }
        self.call_all(|p, ctx| p.on_peer_disconnected(ctx, &peer, &reason));
        self.core.outputs.push_back(Output::Event(HostEvent::PeerDisconnected { peer, reason }));
    }
}
