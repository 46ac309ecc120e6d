//! Connection accounting against the configured limits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sinew_types::Direction;

use crate::config::ConnectionLimits;
use crate::types::{ConnectionCounts, Refusal};

/// Running counts of connections per limit. Every admitted connection is released exactly once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counter {
    pub(crate) counts: ConnectionCounts,
    /// Inbound connections per remote address (see [`ip_key`]); entries at zero are removed.
    pub(crate) per_ip: BTreeMap<IpAddr, usize>,
    /// Inbound handshakes in progress per remote address.
    pub(crate) pending_per_ip: BTreeMap<IpAddr, usize>,
}

/// What the per-IP limits count by: an IPv4 address (IPv4-mapped IPv6 as IPv4), or an IPv6
/// address's /64 network (one site's addresses are free to choose within it).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

fn bump(map: &mut BTreeMap<IpAddr, usize>, ip: IpAddr) {
    *map.entry(ip).or_insert(0) += 1;
}

fn drop_one(map: &mut BTreeMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl Counter {
    /// Checks whether one more outbound connection fits, in the order outbound, total, pending.
    pub(crate) fn check_outbound(&self, limits: &ConnectionLimits) -> Result<(), Refusal> {
        let c = &self.counts;
        if c.outbound >= limits.max_outbound {
            return Err(Refusal::Outbound { limit: limits.max_outbound });
        }
        self.check_common(limits, Direction::Outbound)
    }

    /// Checks whether one more inbound connection from `ip` fits, in the order inbound, total,
    /// pending, per IP.
    pub(crate) fn check_inbound(
        &self,
        limits: &ConnectionLimits,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        if self.counts.inbound >= limits.max_inbound {
            return Err(Refusal::Inbound { limit: limits.max_inbound });
        }
        self.check_common(limits, Direction::Inbound)?;
        let key = ip_key(ip);
        if self.count_for_ip(key) >= limits.max_per_ip {
            return Err(Refusal::PerIp { ip: key, limit: limits.max_per_ip });
        }
        if self.pending_per_ip.get(&key).copied().unwrap_or(0) >= limits.max_pending_per_ip {
            return Err(Refusal::PendingPerIp { ip: key, limit: limits.max_pending_per_ip });
        }
        Ok(())
    }

    fn check_common(&self, limits: &ConnectionLimits, direction: Direction) -> Result<(), Refusal> {
        let c = &self.counts;
        if c.total >= limits.max_total {
            return Err(Refusal::Total { limit: limits.max_total });
        }
        let (pending, limit) = match direction {
            Direction::Inbound => (c.pending_inbound, limits.max_pending_inbound),
            Direction::Outbound => (c.pending_outbound, limits.max_pending_outbound),
        };
        if pending >= limit {
            return Err(Refusal::PendingHandshakes { direction, limit });
        }
        Ok(())
    }

    /// Counts a new pending connection.
    pub(crate) fn admit(&mut self, direction: Direction, ip: Option<IpAddr>) {
        let c = &mut self.counts;
        c.total += 1;
        c.pending_handshakes += 1;
        match direction {
            Direction::Inbound => {
                c.inbound += 1;
                c.pending_inbound += 1;
            }
            Direction::Outbound => {
                c.outbound += 1;
                c.pending_outbound += 1;
            }
        }
        if let Some(ip) = ip {
            bump(&mut self.per_ip, ip);
            bump(&mut self.pending_per_ip, ip);
        }
    }

    /// A pending connection's handshake ended (success, failure or abort).
    pub(crate) fn handshake_done(&mut self, direction: Direction, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            drop_one(&mut self.pending_per_ip, ip);
        }
        let c = &mut self.counts;
        c.pending_handshakes = c.pending_handshakes.saturating_sub(1);
        match direction {
            Direction::Inbound => c.pending_inbound = c.pending_inbound.saturating_sub(1),
            Direction::Outbound => c.pending_outbound = c.pending_outbound.saturating_sub(1),
        }
    }

    /// Releases a connection the node reported closed.
    pub(crate) fn release(&mut self, direction: Direction, ip: Option<IpAddr>) {
        let c = &mut self.counts;
        c.total = c.total.saturating_sub(1);
        match direction {
            Direction::Inbound => c.inbound = c.inbound.saturating_sub(1),
            Direction::Outbound => c.outbound = c.outbound.saturating_sub(1),
        }
        if let Some(ip) = ip {
            drop_one(&mut self.per_ip, ip);
        }
    }

    /// Inbound connections from `ip` (counted by [`ip_key`]).
    pub(crate) fn count_for_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip_key(ip)).copied().unwrap_or(0)
    }
}
