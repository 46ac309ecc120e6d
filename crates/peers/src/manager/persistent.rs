//! Persistent peers: kept connected, redialled with backoff, addresses rotated.

use std::time::Instant;

use sinew_types::{Addr, PeerId};

use super::{LinkState, PeerManager, same_location};
use crate::backoff::Backoff;
use crate::types::{ConnId, ConnState, Reason, Refusal};

/// Most addresses remembered per persistent peer; adding one more forgets the oldest.
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// What a persistent entry is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PersistentKey {
    /// A peer with a known id (its addresses carry it).
    Peer(PeerId),
    /// An address without a peer id, until its first handshake binds it.
    Addr(Addr),
}

/// A persistent peer's redial state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Persistent {
    /// Addresses, dialled in rotation.
    pub(crate) addrs: Vec<Addr>,
    /// Dials so far; the next one uses `addrs[next_addr % addrs.len()]`.
    pub(crate) next_addr: usize,
    pub(crate) backoff: Backoff,
    /// When the next dial is due, if one is scheduled.
    pub(crate) redial_at: Option<Instant>,
}

impl Persistent {
    fn add_addr(&mut self, addr: Addr) {
        if self.addrs.contains(&addr) {
            return;
        }
        if self.addrs.len() >= MAX_ADDRS_PER_PEER {
            self.addrs.remove(0);
        }
        self.addrs.push(addr);
    }

    /// The address for the next dial, advancing the rotation.
    fn rotate(&mut self) -> Option<Addr> {
        if self.addrs.is_empty() {
            return None;
        }
        let addr = self.addrs[self.next_addr % self.addrs.len()].clone();
        self.next_addr = self.next_addr.wrapping_add(1);
        Some(addr)
    }
}

impl PeerManager {
    /// Adds a persistent peer, or another address for one: the manager keeps it connected,
    /// dialling now unless it is connected, being dialled or backing off, and redialling with
    /// backoff after every failed dial and every disconnect, rotating through its addresses.
    ///
    /// An address without a peer id is dialled as it is and becomes bound to the peer id its
    /// first handshake proves. Limit refusals are not errors here: the dial is retried with
    /// backoff. Errors: [`Refusal::ShuttingDown`], [`Refusal::LocalPeer`].
    pub fn add_peer(&mut self, addr: Addr, now: Instant) -> Result<(), Refusal> {
        let now = self.clock(now);
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        let key = match addr.peer() {
            Some(peer) if peer == self.local => return Err(Refusal::LocalPeer),
            Some(peer) => {
                // The same place added earlier without its peer id is now bound.
                let unbound = PersistentKey::Addr(addr.clone().without_peer());
                self.persistent.remove(&unbound);
                PersistentKey::Peer(peer)
            }
            None => match self.bound_peer_at(&addr) {
                Some(peer) => PersistentKey::Peer(peer),
                None => PersistentKey::Addr(addr.clone()),
            },
        };
        let entry = self.persistent.entry(key.clone()).or_default();
        if addr.peer().is_some() || matches!(key, PersistentKey::Addr(_)) {
            entry.add_addr(addr);
        }
        if entry.redial_at.is_none() {
            self.dial_persistent(&key, now);
        }
        Ok(())
    }

    /// Forgets a peer (no more redials) and closes its connection and pending dials with
    /// [`Reason::Removed`]. Works for peers that are not persistent too: it disconnects them.
    pub fn remove_peer(&mut self, peer: &PeerId, now: Instant) {
        let now = self.clock(now);
        self.persistent.remove(&PersistentKey::Peer(*peer));
        match self.links.get(peer).map(|l| l.state) {
            Some(LinkState::Active(conn)) => self.close(conn, Reason::Removed),
            Some(LinkState::Lingering { .. }) => {
                self.disconnect_peer(*peer, Reason::Removed, now, false);
            }
            None => {}
        }
        let dials: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.state == ConnState::Pending
                    && c.dial_addr.as_ref().and_then(Addr::peer) == Some(*peer)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dials {
            self.close(id, Reason::Removed);
        }
    }

    /// Forgets a persistent address: an address without a peer id added with
    /// [`add_peer`](Self::add_peer) and not bound yet, or one address of a persistent peer
    /// (a peer left without addresses is forgotten). Connections are left alone.
    pub fn remove_address(&mut self, addr: &Addr, now: Instant) {
        self.clock(now);
        self.persistent.retain(|key, entry| match key {
            PersistentKey::Addr(a) => !same_location(a, addr),
            PersistentKey::Peer(_) => {
                entry.addrs.retain(|a| !same_location(a, addr));
                entry.next_addr = 0;
                !entry.addrs.is_empty()
            }
        });
    }

    /// The persistent entry a dial to `addr` serves, if any.
    pub(super) fn persistent_key_for(&self, addr: &Addr) -> Option<PersistentKey> {
        let key = match addr.peer() {
            Some(peer) => PersistentKey::Peer(peer),
            None => PersistentKey::Addr(addr.clone()),
        };
        self.persistent.contains_key(&key).then_some(key)
    }

    /// The persistent peer that has `addr` (ignoring peer ids) among its addresses.
    fn bound_peer_at(&self, addr: &Addr) -> Option<PeerId> {
        self.persistent.iter().find_map(|(key, entry)| match key {
            PersistentKey::Peer(p) if entry.addrs.iter().any(|a| same_location(a, addr)) => {
                Some(*p)
            }
            _ => None,
        })
    }

    /// A dial to `addr` (no peer id) proved `peer`: an unbound persistent entry for it joins the
    /// peer's entry, with the address now carrying the peer id.
    pub(super) fn bind_address(&mut self, addr: &Addr, peer: PeerId) {
        let Some(old) = self.persistent.remove(&PersistentKey::Addr(addr.clone())) else {
            return;
        };
        let entry = self.persistent.entry(PersistentKey::Peer(peer)).or_default();
        for a in old.addrs {
            entry.add_addr(a.with_peer(peer));
        }
    }

    /// Whether the entry needs no dial: connected, or a dial to it is pending.
    fn satisfied(&self, key: &PersistentKey) -> bool {
        match key {
            PersistentKey::Peer(peer) => {
                self.links.contains_key(peer) || self.dial_pending_to(*peer)
            }
            PersistentKey::Addr(addr) => self.find_pending_dial(addr).is_some(),
        }
    }

    /// Schedules the next dial of a persistent entry after a failure or a disconnect (counting
    /// one more failure), unless it needs none or one is already scheduled.
    pub(super) fn schedule_redial(&mut self, key: &PersistentKey, now: Instant) {
        if self.shutting_down || self.satisfied(key) {
            return;
        }
        let Some(entry) = self.persistent.get_mut(key) else { return };
        if entry.redial_at.is_none() {
            let delay = entry.backoff.next_delay(&self.config.backoff, &mut self.rng);
            entry.redial_at = Some(now + delay);
        }
    }

    /// Dials a persistent entry now (its next address), if it needs it. A refusal by the limits
    /// counts as a failure and is retried with backoff.
    pub(super) fn dial_persistent(&mut self, key: &PersistentKey, now: Instant) {
        if self.shutting_down || self.satisfied(key) {
            return;
        }
        let Some(addr) = self.persistent.get_mut(key).and_then(Persistent::rotate) else {
            return;
        };
        if self.open_outbound(addr, now).is_err() {
            self.schedule_redial(key, now);
        }
    }

    /// Runs the redials that are due.
    pub(super) fn run_redials(&mut self, now: Instant) {
        let due: Vec<PersistentKey> = self
            .persistent
            .iter()
            .filter(|(_, e)| e.redial_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(entry) = self.persistent.get_mut(&key) {
                entry.redial_at = None;
            }
            self.dial_persistent(&key, now);
        }
    }
}
