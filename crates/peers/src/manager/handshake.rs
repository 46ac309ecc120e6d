//! Completed handshakes and the one-connection-per-peer rules: first connection, restart,
//! duplicate.

use std::time::Instant;

use sinew_types::Direction;
use sinew_types::{Addr, PeerId};

use super::{Link, LinkState, PeerManager, PersistentKey};
use crate::conn::{Conn, Session};
use crate::types::{Action, ConnId, ConnState, Established, Reason};

impl PeerManager {
    /// A pending connection completed its handshake. Ignored for a connection that is not
    /// pending (for example one the manager already closed).
    ///
    /// - The peer has no connection: this one becomes active; `PeerConnected` (and
    ///   `DialSucceeded` for a dial).
    /// - The peer's active connection is from another boot nonce (the peer restarted): it gets
    ///   `Close` with [`Reason::Replaced`], then `PeerDisconnected` with [`Reason::Restarted`],
    ///   then `PeerConnected` for this one.
    /// - Same boot nonce (a duplicate): both ends keep the same connection without talking. With
    ///   different directions the one dialled by the lower peer id wins; with the same
    ///   direction the lower session tag wins. The loser gets [`Action::Drain`]; if the winner
    ///   is the new one, `ConnectionReplaced`. A dial that lost still gets `DialSucceeded`.
    /// - A handshake that proves our own id, or another peer than the dialled address named,
    ///   is closed with [`Reason::UnexpectedPeer`] and reported as a failed dial.
    ///
    /// An address without a peer id that a persistent peer was added with becomes bound to the
    /// proven peer id.
    pub fn handshake_succeeded(&mut self, conn: ConnId, established: Established, now: Instant) {
        let now = self.clock(now);
        let Some(c) = self.conns.get(&conn) else { return };
        if c.state != ConnState::Pending {
            return;
        }
        let peer = established.peer;
        let (direction, counted_ip) = (c.direction, c.counted_ip);
        let dial_addr = c.dial_addr.clone();
        let expected = dial_addr.as_ref().and_then(Addr::peer);
        if peer == self.local || expected.is_some_and(|e| e != peer) {
            self.close(conn, Reason::UnexpectedPeer);
            if let Some(key) = dial_addr.as_ref().and_then(|a| self.persistent_key_for(a)) {
                if peer == self.local && matches!(key, PersistentKey::Addr(_)) {
                    self.persistent.remove(&key);
                } else {
                    self.schedule_redial(&key, now);
                }
            }
            return;
        }
        self.counter.handshake_done(direction, counted_ip);
        let session = Session {
            peer,
            remote_addr: established.remote_addr,
            boot_nonce: established.boot_nonce,
            session_tag: established.session_tag,
            established_at: now,
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.establish(session, &self.config, now);
        let direction = c.direction;
        if let Some(addr) = dial_addr.filter(|a| a.peer().is_none()) {
            self.bind_address(&addr, peer);
        }
        self.attach(conn, peer, direction, established.boot_nonce, now);
    }

    /// Applies the one-connection-per-peer rules to the newly established `conn`.
    fn attach(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        direction: Direction,
        nonce: u64,
        now: Instant,
    ) {
        let Some(link) = self.links.get(&peer).copied() else {
            self.activate(conn, peer, direction, nonce, now);
            return;
        };
        match link.state {
            LinkState::Lingering { old, .. } if link.boot_nonce == nonce => {
                self.swap_active(conn, peer, &link);
                self.emit(Action::ConnectionReplaced { peer, old, new: conn });
                self.dial_reached(conn, peer, direction);
            }
            LinkState::Lingering { .. } => {
                self.disconnect_peer(peer, Reason::Restarted, now, false);
                self.activate(conn, peer, direction, nonce, now);
            }
            LinkState::Active(old) => {
                let Some(old_conn) = self.conns.get(&old) else {
                    // Unreachable: an active connection is tracked until it is closed, and its
                    // close ends the link. Recover by starting over.
                    self.disconnect_peer(peer, Reason::ConnectionLost, now, false);
                    self.activate(conn, peer, direction, nonce, now);
                    return;
                };
                let successor_expected = old_conn.awaits_successor();
                if old_conn.state == ConnState::Closing && !successor_expected {
                    // We are closing the old connection anyway: that ends the link now.
                    let reason = old_conn.reason.unwrap_or(Reason::ConnectionLost);
                    self.disconnect_peer(peer, reason, now, false);
                    self.activate(conn, peer, direction, nonce, now);
                } else if link.boot_nonce != nonce {
                    self.close(old, Reason::Replaced);
                    self.disconnect_peer(peer, Reason::Restarted, now, false);
                    self.activate(conn, peer, direction, nonce, now);
                } else {
                    self.resolve_duplicate(conn, old, peer, &link, now);
                    self.dial_reached(conn, peer, direction);
                }
            }
        }
    }

    /// Two established connections to the same peer process: keep one, drain the other.
    fn resolve_duplicate(
        &mut self,
        new: ConnId,
        old: ConnId,
        peer: PeerId,
        link: &Link,
        now: Instant,
    ) {
        let (Some(new_conn), Some(old_conn)) = (self.conns.get(&new), self.conns.get(&old)) else {
            return;
        };
        // A connection the remote already drains never wins: its successor is on the way.
        let new_wins =
            old_conn.awaits_successor() || self.rank(peer, new_conn) < self.rank(peer, old_conn);
        if new_wins {
            self.swap_active(new, peer, link);
            self.emit(Action::ConnectionReplaced { peer, old, new });
            self.drain(old, now);
        } else {
            if let Some(c) = self.conns.get_mut(&new) {
                c.authorized = link.authorized;
            }
            self.drain(new, now);
        }
    }

    /// The order both ends agree on: the connection dialled by the lower peer id first, then
    /// the lower session tag.
    fn rank(&self, peer: PeerId, c: &Conn) -> (bool, [u8; 32]) {
        let preferred = if self.local < peer { Direction::Outbound } else { Direction::Inbound };
        let tag = c.session.as_ref().map_or([0xff; 32], |s| s.session_tag);
        (c.direction != preferred, tag)
    }

    /// Starts draining an established connection (nothing for one already draining or closing).
    fn drain(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.state == ConnState::Established {
            c.start_drain(&self.config, now);
            self.emit(Action::Drain { conn: id });
        }
    }

    /// Makes `conn` the active connection of an existing link, inheriting its authorization
    /// and authorization deadline.
    fn swap_active(&mut self, conn: ConnId, peer: PeerId, link: &Link) {
        let deadline = link.since + self.config.auth_timeout;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.authorized = link.authorized;
            c.auth_deadline = (!link.authorized).then_some(deadline);
        }
        if let Some(l) = self.links.get_mut(&peer) {
            l.state = LinkState::Active(conn);
        }
    }

    /// Starts a new link with `conn` as the active connection.
    fn activate(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        direction: Direction,
        nonce: u64,
        now: Instant,
    ) {
        let authorized = self.config.default_authorized;
        let link =
            Link { state: LinkState::Active(conn), since: now, boot_nonce: nonce, authorized };
        self.links.insert(peer, link);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.authorized = authorized;
            c.auth_deadline = (!authorized).then_some(now + self.config.auth_timeout);
        }
        if let Some(entry) = self.persistent.get_mut(&PersistentKey::Peer(peer)) {
            entry.redial_at = None;
        }
        self.emit(Action::PeerConnected { peer, conn, direction });
        self.dial_reached(conn, peer, direction);
    }

    /// Tells the waiters of a dial that the peer is connected.
    fn dial_reached(&mut self, conn: ConnId, peer: PeerId, direction: Direction) {
        if direction == Direction::Outbound {
            self.emit(Action::DialSucceeded { conn, peer });
        }
    }
}
