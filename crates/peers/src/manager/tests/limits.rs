//! Each limit refuses with its typed error and frees its slot when the connection ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::{ConnectionLimits, Refusal};

fn config(limits: ConnectionLimits) -> PeersConfig {
    PeersConfig { limits, ..PeersConfig::default() }
}

fn limits(
    total: usize,
    inbound: usize,
    outbound: usize,
    pending: usize,
    per_ip: usize,
) -> ConnectionLimits {
    ConnectionLimits {
        max_total: total,
        max_inbound: inbound,
        max_outbound: outbound,
        max_pending_inbound: pending,
        max_pending_outbound: pending,
        max_per_ip: per_ip,
        max_pending_per_ip: 64,
    }
}

#[test]
fn outbound_limit() {
    let mut f = Fixture::new(config(limits(10, 10, 2, 10, 10)));
    let first = f.connect_out(0, secs(0));
    f.dial(1, secs(0));
    let refused = f.pm.dial(addr_of(f.remotes[2], 3), f.at(secs(1)));
    assert_eq!(refused, Err(Refusal::Outbound { limit: 2 }));
    assert_eq!(f.actions(), vec![], "a refused dial emits nothing");
    // Established connections count too, in every state, until closed.
    f.pm.remove_peer(&f.remotes[0], f.at(secs(1)));
    f.actions();
    assert!(f.pm.dial(addr_of(f.remotes[2], 3), f.at(secs(1))).is_err(), "closing still counts");
    f.pm.connection_closed(first, f.at(secs(2)));
    f.actions();
    assert!(matches!(
        f.pm.dial(addr_of(f.remotes[2], 3), f.at(secs(2))),
        Ok(DialTicket::Pending(_))
    ));
    f.pm.check_invariants();
}

#[test]
fn inbound_limit() {
    let mut f = Fixture::new(config(limits(10, 2, 10, 10, 10)));
    let a = f.connect_in(0, secs(0));
    f.connect_in(1, secs(0));
    assert_eq!(f.pm.inbound(socket(3, 1), f.at(secs(1))), Err(Refusal::Inbound { limit: 2 }));
    // Outbound is not affected by the inbound limit.
    f.dial(2, secs(1));
    f.pm.connection_closed(a, f.at(secs(2)));
    f.actions();
    assert!(f.pm.inbound(socket(3, 1), f.at(secs(2))).is_ok());
    f.pm.check_invariants();
}

#[test]
fn total_limit() {
    let mut f = Fixture::new(config(limits(3, 10, 10, 10, 10)));
    let a = f.connect_out(0, secs(0));
    f.connect_out(1, secs(0));
    f.connect_in(2, secs(0));
    assert_eq!(f.pm.inbound(socket(9, 1), f.at(secs(1))), Err(Refusal::Total { limit: 3 }));
    assert_eq!(
        f.pm.dial(addr_of(f.remotes[3], 4), f.at(secs(1))),
        Err(Refusal::Total { limit: 3 })
    );
    f.pm.connection_closed(a, f.at(secs(2)));
    f.actions();
    assert_eq!(f.pm.counts().total, 2);
    assert!(f.pm.inbound(socket(9, 1), f.at(secs(2))).is_ok());
}

#[test]
fn pending_handshake_limits_are_per_direction() {
    let mut f = Fixture::new(config(limits(10, 10, 10, 1, 10)));
    let a = f.pm.inbound(socket(1, 1), f.at(secs(0))).unwrap();
    // A silent inbound socket fills the inbound limit, and our own dials still go out.
    let refusal = Refusal::PendingHandshakes { direction: Direction::Inbound, limit: 1 };
    assert_eq!(f.pm.inbound(socket(2, 1), f.at(secs(1))), Err(refusal));
    let b = f.dial(0, secs(0));
    assert_eq!(f.pm.counts().pending_handshakes, 2);
    assert_eq!((f.pm.counts().pending_inbound, f.pm.counts().pending_outbound), (1, 1));
    let refusal = Refusal::PendingHandshakes { direction: Direction::Outbound, limit: 1 };
    assert_eq!(f.pm.dial(addr_of(f.remotes[1], 2), f.at(secs(1))), Err(refusal));
    // A completed handshake frees the pending slot (the connection still counts in total).
    f.pm.handshake_succeeded(a, est(f.remotes[2], Direction::Inbound, 1, 1), f.at(secs(2)));
    assert_eq!(f.pm.counts().pending_inbound, 0);
    let c = f.pm.inbound(socket(2, 1), f.at(secs(2))).unwrap();
    // So does a failed one.
    f.pm.dial_failed(b, crate::DialFailure::Timeout, f.at(secs(3)));
    assert!(f.pm.dial(addr_of(f.remotes[1], 2), f.at(secs(3))).is_ok());
    assert_eq!(f.pm.counts().pending_handshakes, 2);
    f.pm.handshake_failed(c, f.at(secs(4)));
    assert_eq!(f.pm.counts().pending_handshakes, 1);
    f.pm.check_invariants();
}

#[test]
fn per_ip_limit_counts_inbound_only_and_folds_mapped_addresses() {
    let mut f = Fixture::new(config(limits(10, 10, 10, 10, 2)));
    let ip = Ipv4Addr::new(192, 0, 2, 1);
    let v4 = |port| SocketAddr::new(IpAddr::V4(ip), port);
    let mapped = SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), 9);
    let first = f.pm.inbound(v4(1), f.at(secs(0))).unwrap();
    f.pm.inbound(mapped, f.at(secs(0))).unwrap();
    assert_eq!(f.pm.connections_from(IpAddr::V4(ip)), 2);
    assert_eq!(
        f.pm.inbound(v4(3), f.at(secs(0))),
        Err(Refusal::PerIp { ip: IpAddr::V4(ip), limit: 2 })
    );
    // Another IP is fine, and so is dialling out to the same one.
    assert!(
        f.pm.inbound(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1), f.at(secs(0))).is_ok()
    );
    let out = Addr::tcp(v4(4001)).with_peer(f.remotes[0]);
    assert!(f.pm.dial(out, f.at(secs(0))).is_ok());
    f.pm.handshake_failed(first, f.at(secs(1)));
    assert_eq!(f.pm.connections_from(IpAddr::V4(ip)), 1);
    assert!(f.pm.inbound(v4(3), f.at(secs(1))).is_ok());
    f.pm.check_invariants();
}

#[test]
fn a_persistent_peer_refused_by_a_limit_is_retried_with_backoff() {
    let mut f = Fixture::new(config(limits(10, 10, 1, 10, 10)));
    f.connect_out(0, secs(0));
    let peer = f.remotes[1];
    assert_eq!(f.pm.add_peer(addr_of(peer, 2), f.at(secs(1))), Ok(()));
    assert_eq!(f.actions(), vec![], "the outbound limit holds");
    let redial = f.pm.next_redial(&peer).expect("retry scheduled");
    assert!(redial > f.at(secs(1)));
}

/// A few addresses cannot hold every pending slot: each may have `max_pending_per_ip`
/// handshakes in progress, and IPv6 addresses count by their /64.
#[test]
fn pending_handshakes_per_address_and_ipv6_networks() {
    let mut limits = limits(100, 100, 100, 100, 100);
    limits.max_pending_per_ip = 2;
    let mut f = Fixture::new(config(limits));
    let a = f.pm.inbound(socket(1, 1), f.at(secs(0))).unwrap();
    f.pm.inbound(socket(1, 2), f.at(secs(0))).unwrap();
    assert!(matches!(
        f.pm.inbound(socket(1, 3), f.at(secs(0))),
        Err(Refusal::PendingPerIp { limit: 2, .. })
    ));
    // Another address is unaffected; a finished handshake frees the slot.
    f.pm.inbound(socket(2, 1), f.at(secs(0))).unwrap();
    f.pm.handshake_failed(a, f.at(secs(1)));
    f.pm.inbound(socket(1, 3), f.at(secs(1))).unwrap();
    // Two addresses in one IPv6 /64 are one address; another /64 is another.
    let v6 = |last: u16, net: u16| {
        SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, last).into(), 4000 + last)
    };
    f.pm.inbound(v6(1, 1), f.at(secs(2))).unwrap();
    f.pm.inbound(v6(2, 1), f.at(secs(2))).unwrap();
    assert!(matches!(f.pm.inbound(v6(3, 1), f.at(secs(2))), Err(Refusal::PendingPerIp { .. })));
    f.pm.inbound(v6(3, 2), f.at(secs(2))).unwrap();
    f.pm.check_invariants();
}
