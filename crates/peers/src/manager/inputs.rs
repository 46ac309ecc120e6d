//! Commands and connection events: dial, accept, failures, closes, traffic, authorization,
//! shutdown.

use std::net::SocketAddr;
use std::time::Instant;

use sinew_types::Direction;
use sinew_types::{Addr, PeerId};

use super::{LinkState, PeerManager, PersistentKey};
use crate::conn::Conn;
use crate::types::{
    Action, ConnId, ConnState, DialFailure, DialTicket, Reason, Refusal, RemoteDisconnect,
};

impl PeerManager {
    /// Dials `addr` once (no redials: see [`add_peer`](Self::add_peer) for that).
    ///
    /// - If the address names a peer that is connected: [`DialTicket::Connected`], nothing is
    ///   dialled.
    /// - If a dial to the same peer id (or, for an address without a peer id, to the same
    ///   address) is pending: [`DialTicket::Pending`] with that dial's id. Concurrent requests for
    ///   one peer share one dial.
    /// - Otherwise the outbound, total and pending-handshake limits are checked, an
    ///   [`Action::Dial`] is queued and its id returned.
    pub fn dial(&mut self, addr: Addr, now: Instant) -> Result<DialTicket, Refusal> {
        let now = self.clock(now);
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if let Some(peer) = addr.peer() {
            if peer == self.local {
                return Err(Refusal::LocalPeer);
            }
            if self.reachable(&peer) {
                return Ok(DialTicket::Connected(peer));
            }
        }
        if let Some(conn) = self.find_pending_dial(&addr) {
            return Ok(DialTicket::Pending(conn));
        }
        self.open_outbound(addr, now).map(DialTicket::Pending)
    }

    /// A socket was accepted from `remote`; its handshake has not run yet. Checks the inbound,
    /// total, pending-handshake and per-IP limits; on refusal drop the socket.
    pub fn inbound(&mut self, remote: SocketAddr, now: Instant) -> Result<ConnId, Refusal> {
        let now = self.clock(now);
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        let ip = crate::limits::ip_key(remote.ip());
        self.counter.check_inbound(&self.config.limits, ip)?;
        self.counter.admit(Direction::Inbound, Some(ip));
        let id = self.alloc_conn();
        let mut conn = Conn::pending(Direction::Inbound, now);
        conn.remote_socket = Some(remote);
        conn.counted_ip = Some(ip);
        self.conns.insert(id, Box::new(conn));
        Ok(id)
    }

    /// The handshake of a pending connection failed (inbound or outbound). For a dial this
    /// emits `DialFailed` and schedules a redial if the peer is persistent.
    pub fn handshake_failed(&mut self, conn: ConnId, now: Instant) {
        self.dial_failed(conn, DialFailure::Handshake, now);
    }

    /// A dial (or an inbound upgrade) failed before its handshake completed. Frees its slots,
    /// emits `DialFailed` for a dial the manager has not already reported, and schedules a
    /// redial for a persistent peer. The id is finished: a later `connection_closed` for it is
    /// ignored. Ignored for established connections (they end with `connection_closed`).
    pub fn dial_failed(&mut self, conn: ConnId, failure: DialFailure, now: Instant) {
        let now = self.clock(now);
        if self.conns.get(&conn).is_none_or(|c| c.session.is_some()) {
            return;
        }
        self.forget_unestablished(conn, failure, now);
    }

    /// The connection's I/O ended, for any cause (including a `Close` or `Drain` the manager
    /// asked for). Frees its slots. If it was its peer's active connection, emits
    /// `PeerDisconnected` with the reason recorded when the manager asked to close it (else
    /// [`Reason::ConnectionLost`], or [`Reason::Remote`] if the remote announced it) and
    /// schedules a redial for a persistent peer. A duplicate or replaced connection ends
    /// silently. A pending connection ends as if its dial failed.
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock(now);
        let Some(c) = self.conns.get(&conn) else { return };
        if c.session.is_none() {
            self.forget_unestablished(conn, DialFailure::Unreachable, now);
            return;
        }
        let Some(c) = self.conns.remove(&conn) else { return };
        self.counter.release(c.direction, c.counted_ip);
        let Some(peer) = c.session_peer() else { return };
        let Some(link) = self.links.get_mut(&peer) else { return };
        if link.state != LinkState::Active(conn) {
            return;
        }
        if c.awaits_successor() && !self.shutting_down {
            // The remote drains this connection as a duplicate of one still in its handshake
            // here: keep the peer connected for the drain timeout so the swap stays silent.
            let until = now + self.config.drain_timeout;
            link.state = LinkState::Lingering { old: conn, until };
        } else {
            self.disconnect_peer(peer, c.reason.unwrap_or(Reason::ConnectionLost), now, true);
        }
    }

    /// Removes a connection that never completed its handshake.
    fn forget_unestablished(&mut self, conn: ConnId, failure: DialFailure, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else { return };
        self.counter.release(c.direction, c.counted_ip);
        if c.state != ConnState::Pending {
            // Closed by the manager, which already reported the dial and decided on redials.
            return;
        }
        self.counter.handshake_done(c.direction, c.counted_ip);
        let Some(addr) = c.dial_addr else { return };
        self.emit(Action::DialFailed { conn, addr: addr.clone() });
        let Some(key) = self.persistent_key_for(&addr) else { return };
        if failure == DialFailure::SelfConnection && matches!(key, PersistentKey::Addr(_)) {
            // An address without a peer id that leads back to us: never dial it again.
            self.persistent.remove(&key);
        } else {
            self.schedule_redial(&key, now);
        }
    }

    /// The pong for one of our pings. A matching nonce resets the missed-ping count and
    /// records the round-trip time; anything else is ignored. Not activity.
    pub fn pong(&mut self, conn: ConnId, nonce: u64, now: Instant) {
        let now = self.clock(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Some((sent_nonce, sent_at)) = c.ping.outstanding
            && sent_nonce == nonce
            && c.state == ConnState::Established
        {
            c.ping.outstanding = None;
            c.ping.missed = 0;
            c.ping.rtt = Some(now.saturating_duration_since(sent_at));
        }
    }

    /// Application traffic on the connection, in either direction (never ping, pong, keepalive
    /// or identify): pushes the idle deadline back.
    pub fn activity(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_activity = now;
        }
    }

    /// An application stream opened on the connection: it is not idle while one is open.
    pub fn stream_opened(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open_streams = c.open_streams.saturating_add(1);
            c.last_activity = now;
        }
    }

    /// The connection has `count` application streams open now (counts as activity): the
    /// absolute form of [`PeerManager::stream_opened`] and [`PeerManager::stream_closed`], for a
    /// driver that coalesces its reports.
    pub fn streams_open(&mut self, conn: ConnId, count: u32, now: Instant) {
        let now = self.clock(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open_streams = count;
            c.last_activity = now;
        }
    }

    /// An application stream on the connection closed (counts as activity).
    pub fn stream_closed(&mut self, conn: ConnId, now: Instant) {
        let now = self.clock(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open_streams = c.open_streams.saturating_sub(1);
            c.last_activity = now;
        }
    }

    /// Authorizes a connected peer: its connections, and any that replace them while it stays
    /// connected, are authorized. Authorization ends with the peer's `PeerDisconnected`. Does
    /// nothing for a peer that is not connected.
    pub fn authorize(&mut self, peer: &PeerId, now: Instant) {
        self.clock(now);
        let Some(link) = self.links.get_mut(peer) else { return };
        link.authorized = true;
        for c in self.conns.values_mut() {
            if c.session_peer() == Some(*peer) {
                c.authorized = true;
                c.auth_deadline = None;
            }
        }
    }

    /// The remote sent a Disconnect frame on an established connection.
    ///
    /// - [`RemoteDisconnect::Duplicate`]: the remote keeps another connection to us. If this is
    ///   the active one it starts draining ([`Action::Drain`]) but stays active until its
    ///   successor completes its handshake here (then `ConnectionReplaced`) or, if it ends first,
    ///   for up to the drain timeout more: the swap stays silent either way. Meanwhile the node
    ///   should hold new messages for the peer in the peer's queue rather than write them after
    ///   its own Disconnect frame.
    /// - [`RemoteDisconnect::Other`]: records [`Reason::Remote`] for the `PeerDisconnected`
    ///   that follows `connection_closed`.
    pub fn disconnect_received(&mut self, conn: ConnId, kind: RemoteDisconnect, now: Instant) {
        let now = self.clock(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.state, ConnState::Established | ConnState::Draining) {
            return;
        }
        match kind {
            RemoteDisconnect::Duplicate => {
                c.remote_duplicate = true;
                if c.state == ConnState::Established {
                    c.start_drain(&self.config, now);
                    self.emit(Action::Drain { conn });
                }
            }
            RemoteDisconnect::Other => {
                c.reason.get_or_insert(Reason::Remote);
            }
        }
    }

    /// Shuts down: closes every connection with [`Reason::Shutdown`] (pending dials also report
    /// `DialFailed`), ends lingering peers, cancels redials, and refuses every later dial or
    /// inbound connection with [`Refusal::ShuttingDown`]. Keep reporting `connection_closed`;
    /// each active connection's end emits `PeerDisconnected` with [`Reason::Shutdown`].
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, Reason::Shutdown);
        }
        let lingering: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l.state, LinkState::Lingering { .. }))
            .map(|(p, _)| *p)
            .collect();
        for peer in lingering {
            self.disconnect_peer(peer, Reason::Shutdown, now, false);
        }
        for entry in self.persistent.values_mut() {
            entry.redial_at = None;
        }
    }
}
