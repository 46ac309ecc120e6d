//! Internal consistency checks, run by the tests and the fuzzing harness after every step.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{LinkState, PeerManager};
use crate::types::{ConnState, ConnectionCounts};
use sinew_types::Direction;

impl PeerManager {
    /// Panics with a description if the manager's state is inconsistent.
    pub(crate) fn check_invariants(&self) {
        self.check_counts();
        self.check_links();
        for (id, c) in &self.conns {
            assert!(id.0 < self.next_conn, "{id} was never allocated");
            match c.state {
                ConnState::Pending => {
                    assert!(c.session.is_none(), "{id}: pending with a session");
                }
                ConnState::Established | ConnState::Draining => {
                    assert!(c.session.is_some(), "{id}: {:?} without a session", c.state);
                }
                ConnState::Closing => {}
            }
            assert_eq!(
                c.drain_deadline.is_some(),
                c.state == ConnState::Draining,
                "{id}: drain deadline in state {:?}",
                c.state
            );
            assert_eq!(c.dial_addr.is_some(), c.direction == Direction::Outbound);
        }
        if self.shutting_down {
            assert!(
                self.persistent.values().all(|p| p.redial_at.is_none()),
                "redial after shutdown"
            );
            for (id, c) in &self.conns {
                assert_eq!(c.state, ConnState::Closing, "{id} not closing after shutdown");
            }
        }
    }

    fn check_counts(&self) {
        let mut recount = ConnectionCounts::default();
        let mut per_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut pending_per_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for c in self.conns.values() {
            recount.total += 1;
            match c.direction {
                Direction::Inbound => recount.inbound += 1,
                Direction::Outbound => recount.outbound += 1,
            }
            if c.state == ConnState::Pending {
                if let Some(ip) = c.counted_ip {
                    *pending_per_ip.entry(ip).or_insert(0) += 1;
                }
                recount.pending_handshakes += 1;
                match c.direction {
                    Direction::Inbound => recount.pending_inbound += 1,
                    Direction::Outbound => recount.pending_outbound += 1,
                }
            }
            if let Some(ip) = c.counted_ip {
                *per_ip.entry(ip).or_insert(0) += 1;
            }
        }
        assert_eq!(self.counter.counts, recount, "counts drifted from a recount");
        assert_eq!(self.counter.per_ip, per_ip, "per-IP counts drifted from a recount");
        assert_eq!(self.counter.pending_per_ip, pending_per_ip, "pending per-IP drifted");
        let limits = &self.config.limits;
        assert!(recount.total <= limits.max_total, "total over its limit");
        assert!(recount.inbound <= limits.max_inbound, "inbound over its limit");
        assert!(recount.outbound <= limits.max_outbound, "outbound over its limit");
        assert!(
            recount.pending_inbound <= limits.max_pending_inbound,
            "pending inbound over limit"
        );
        assert!(
            recount.pending_outbound <= limits.max_pending_outbound,
            "pending outbound over their limit"
        );
        assert!(per_ip.values().all(|n| *n <= limits.max_per_ip), "per-IP over its limit");
    }

    fn check_links(&self) {
        for (peer, link) in &self.links {
            match link.state {
                LinkState::Active(id) => {
                    let c = self.conns.get(&id).unwrap_or_else(|| panic!("active {id} is gone"));
                    assert_eq!(c.session_peer(), Some(*peer), "{id} is active for another peer");
                    assert_ne!(c.state, ConnState::Pending, "{id} active while pending");
                    assert_eq!(
                        c.authorized, link.authorized,
                        "{id}: authorization differs from its peer's"
                    );
                }
                LinkState::Lingering { old, .. } => {
                    assert!(!self.conns.contains_key(&old), "lingering on live {old}");
                    assert!(!self.shutting_down, "lingering after shutdown");
                }
            }
        }
        // Every established (non-draining, non-closing) connection is its peer's active one, so
        // at most one per peer.
        for (id, c) in &self.conns {
            if c.state == ConnState::Established {
                let peer = c.session_peer().unwrap_or_else(|| panic!("{id} without a peer"));
                assert_eq!(
                    self.active_connection(&peer),
                    Some(*id),
                    "{id} established but not active"
                );
            }
        }
    }
}
