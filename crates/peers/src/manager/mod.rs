//! The [`PeerManager`]: state, construction, getters, outputs and shared helpers.
//!
//! The inputs live in `inputs.rs` (connections), `handshake.rs` (the one-connection-per-peer
//! rules), `persistent.rs` (persistent peers and redials) and `timers.rs` (deadlines).

mod handshake;
mod inputs;
mod invariants;
pub(crate) mod persistent;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sinew_types::Direction;
use sinew_types::{Addr, PeerId};

use crate::config::{ConfigError, PeersConfig};
use crate::conn::Conn;
use crate::limits::Counter;
use crate::types::{Action, ConnId, ConnState, ConnectionCounts, ConnectionView, Reason, Refusal};

pub(crate) use persistent::{Persistent, PersistentKey};

/// The sans-IO peer and connection manager. See the [crate documentation](crate) for the
/// contract and the call order.
#[derive(Debug)]
pub struct PeerManager {
    local: PeerId,
    config: PeersConfig,
    rng: ChaCha8Rng,
    next_conn: u64,
    next_ping_nonce: u64,
    /// Every connection the node has not reported ended, in exactly one [`ConnState`].
    /// Boxed entries: B-tree nodes hold eleven of them, so small entries keep idle memory low.
    conns: BTreeMap<ConnId, Box<Conn>>,
    /// Connected peers: a `PeerConnected` was emitted and no `PeerDisconnected` since.
    links: BTreeMap<PeerId, Link>,
    persistent: BTreeMap<PersistentKey, Persistent>,
    counter: Counter,
    actions: VecDeque<Action>,
    shutting_down: bool,
    /// The latest time any call carried; earlier times are read as this one, so deadlines never
    /// move backwards when the caller's clocks disagree.
    now: Option<Instant>,
}

/// A connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) state: LinkState,
    /// When `PeerConnected` was emitted (duplicate swaps keep it).
    pub(crate) since: Instant,
    /// The boot nonce of the peer process this link is with.
    pub(crate) boot_nonce: u64,
    pub(crate) authorized: bool,
}

/// How a connected peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Through its active connection.
    Active(ConnId),
    /// Its active connection was a remote-announced duplicate and closed before its successor
    /// completed its handshake here; the peer stays connected until `until`.
    Lingering { old: ConnId, until: Instant },
}

impl PeerManager {
    /// A manager for the local identity `local`, with its RNG seeded from `rng_seed` (the same
    /// seed and the same inputs give the same outputs).
    pub fn new(local: PeerId, config: PeersConfig, rng_seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        let next_ping_nonce = rng.next_u64();
        Ok(Self {
            local,
            config,
            rng,
            next_conn: 1,
            next_ping_nonce,
            conns: BTreeMap::new(),
            links: BTreeMap::new(),
            persistent: BTreeMap::new(),
            counter: Counter::default(),
            actions: VecDeque::new(),
            shutting_down: false,
            now: None,
        })
    }

    // ---- getters ----

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &PeersConfig {
        &self.config
    }

    /// The peer's active connection, if it is connected through one.
    pub fn active_connection(&self, peer: &PeerId) -> Option<ConnId> {
        match self.links.get(peer)?.state {
            LinkState::Active(conn) => Some(conn),
            LinkState::Lingering { .. } => None,
        }
    }

    /// A snapshot of one connection, or `None` once the node reported its end.
    pub fn connection(&self, conn: ConnId) -> Option<ConnectionView> {
        let c = self.conns.get(&conn)?;
        let peer = c.peer();
        Some(ConnectionView {
            peer,
            direction: c.direction,
            state: c.state,
            active: peer.is_some_and(|p| self.active_connection(&p) == Some(conn)),
            remote_addr: match &c.session {
                Some(s) => Some(s.remote_addr.clone()),
                None => c.dial_addr.clone(),
            },
            remote_socket: c.remote_socket,
            established_at: c.session.as_ref().map(|s| s.established_at),
            boot_nonce: c.session.as_ref().map(|s| s.boot_nonce),
            rtt: c.ping.rtt,
            authorized: c.authorized,
            missed_pings: c.ping.missed,
            open_streams: c.open_streams,
        })
    }

    /// Every connection the node has not reported ended, in id order.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// Connected peers, sorted: those with a `PeerConnected` and no `PeerDisconnected` since.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.links.keys().copied().collect()
    }

    /// Whether the peer is connected (see [`connected_peers`](Self::connected_peers)).
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Persistent peers with a known peer id, sorted.
    pub fn persistent_peers(&self) -> Vec<PeerId> {
        self.persistent
            .keys()
            .filter_map(|k| match k {
                PersistentKey::Peer(p) => Some(*p),
                PersistentKey::Addr(_) => None,
            })
            .collect()
    }

    /// Persistent addresses whose peer id is not known yet (bound at their first handshake).
    pub fn unbound_persistent_addrs(&self) -> Vec<Addr> {
        self.persistent
            .keys()
            .filter_map(|k| match k {
                PersistentKey::Addr(a) => Some(a.clone()),
                PersistentKey::Peer(_) => None,
            })
            .collect()
    }

    /// When a persistent peer is redialled next, if a redial is scheduled.
    pub fn next_redial(&self, peer: &PeerId) -> Option<Instant> {
        self.persistent.get(&PersistentKey::Peer(*peer))?.redial_at
    }

    /// A persistent peer's consecutive failures (failed dials and disconnects) that the backoff
    /// counts; reset after a connection stays up for `backoff.stable_after`.
    pub fn redial_failures(&self, peer: &PeerId) -> Option<u32> {
        Some(self.persistent.get(&PersistentKey::Peer(*peer))?.backoff.failures())
    }

    /// The connections counted toward each limit.
    pub fn counts(&self) -> ConnectionCounts {
        self.counter.counts
    }

    /// Inbound connections counted toward the per-IP limit for `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.counter.count_for_ip(ip)
    }

    /// Whether the connection is authorized (unknown connections are not).
    pub fn is_authorized(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.authorized)
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    // ---- outputs ----

    /// The next output, in the order the manager produced them. Drain until `None` after every
    /// input; the queue holds only what the last inputs produced.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest deadline, if any: call [`handle_timeout`](Self::handle_timeout) when it
    /// passes. Recompute after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns =
            self.conns.values().filter_map(|c| c.next_deadline(&self.config, self.idle_exempt(c)));
        let lingers = self.links.values().filter_map(|l| match l.state {
            LinkState::Lingering { until, .. } => Some(until),
            LinkState::Active(_) => None,
        });
        let redials = self.persistent.values().filter_map(|p| p.redial_at);
        conns.chain(lingers).chain(redials).min()
    }

    // ---- helpers shared by the input modules ----

    /// Reads the time of an input, never earlier than a time already seen.
    fn clock(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |seen| seen.max(now));
        self.now = Some(now);
        now
    }

    fn emit(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn alloc_conn(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// Whether the idle timeout spares this connection (its peer is persistent).
    fn idle_exempt(&self, c: &Conn) -> bool {
        c.session_peer().is_some_and(|p| self.persistent.contains_key(&PersistentKey::Peer(p)))
    }

    /// Whether `dial` should answer `Connected` for the peer: it is connected and not through a
    /// connection we are already closing.
    fn reachable(&self, peer: &PeerId) -> bool {
        match self.links.get(peer).map(|l| l.state) {
            Some(LinkState::Active(conn)) => {
                self.conns.get(&conn).is_some_and(|c| c.state != ConnState::Closing)
            }
            Some(LinkState::Lingering { .. }) => true,
            None => false,
        }
    }

    /// The pending dial that `addr` can share: one to the same peer id, or for an address
    /// without a peer id, one to the same location.
    fn find_pending_dial(&self, addr: &Addr) -> Option<ConnId> {
        self.conns.iter().find_map(|(id, c)| {
            let dialled = c.dial_addr.as_ref().filter(|_| c.state == ConnState::Pending)?;
            let same = match addr.peer() {
                Some(peer) => dialled.peer() == Some(peer),
                None => same_location(dialled, addr),
            };
            same.then_some(*id)
        })
    }

    /// Whether a dial expecting `peer` is pending.
    fn dial_pending_to(&self, peer: PeerId) -> bool {
        self.conns.values().any(|c| {
            c.state == ConnState::Pending && c.dial_addr.as_ref().and_then(Addr::peer) == Some(peer)
        })
    }

    /// Admits and starts an outbound connection.
    fn open_outbound(&mut self, addr: Addr, now: Instant) -> Result<ConnId, Refusal> {
        self.counter.check_outbound(&self.config.limits)?;
        self.counter.admit(Direction::Outbound, None);
        let id = self.alloc_conn();
        let mut conn = Conn::pending(Direction::Outbound, now);
        conn.dial_addr = Some(addr.clone());
        self.conns.insert(id, Box::new(conn));
        self.emit(Action::Dial { conn: id, addr });
        Ok(id)
    }

    /// Asks the node to close a connection (idempotent). A pending dial also reports
    /// `DialFailed` at once, so its waiters are released.
    fn close(&mut self, id: ConnId, reason: Reason) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let was = c.state;
        if was == ConnState::Closing {
            return;
        }
        c.state = ConnState::Closing;
        c.reason = Some(reason);
        c.drain_deadline = None;
        let dial_addr = c.dial_addr.clone();
        let (direction, counted_ip) = (c.direction, c.counted_ip);
        if was == ConnState::Pending {
            self.counter.handshake_done(direction, counted_ip);
            if let Some(addr) = dial_addr {
                self.emit(Action::DialFailed { conn: id, addr });
            }
        }
        self.emit(Action::Close { conn: id, reason });
    }

    /// Ends a peer's link: emits `PeerDisconnected`, and for a persistent peer applies the
    /// backoff rules and (if `redial`) schedules the next dial.
    fn disconnect_peer(&mut self, peer: PeerId, reason: Reason, now: Instant, redial: bool) {
        let Some(link) = self.links.remove(&peer) else { return };
        self.emit(Action::PeerDisconnected { peer, reason });
        if !redial {
            return;
        }
        let key = PersistentKey::Peer(peer);
        if let Some(entry) = self.persistent.get_mut(&key) {
            if now.saturating_duration_since(link.since) >= self.config.backoff.stable_after {
                entry.backoff.reset();
            }
            self.schedule_redial(&key, now);
        }
    }
}

/// Whether two addresses name the same place, ignoring the expected peer id.
fn same_location(a: &Addr, b: &Addr) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port() == b.port() && a.path() == b.path()
}
