//! Persistent peers: backoff, stability reset, address rotation and binding, removal.

use super::*;
use crate::{DialFailure, Reason};

/// Asserts `delay` is the `n`-th backoff delay (1-based) of the default config, within jitter.
fn assert_backoff(delay: Duration, n: u32) {
    let nominal = (0.5 * 2f64.powi(n as i32 - 1)).min(60.0);
    let d = delay.as_secs_f64();
    assert!(
        d >= nominal * 0.8 - 1e-6 && d <= nominal * 1.2 + 1e-6,
        "delay {n}: {d} s outside [{}, {}]",
        nominal * 0.8,
        nominal * 1.2
    );
}

fn single_dial(f: &mut Fixture) -> (ConnId, Addr) {
    match f.actions().as_slice() {
        [Action::Dial { conn, addr }] => (*conn, addr.clone()),
        other => panic!("expected one Dial, got {other:?}"),
    }
}

#[test]
fn failures_back_off_exponentially_within_jitter_up_to_the_cap() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (mut conn, addr) = single_dial(&mut f);
    let mut t = f.at(secs(0));
    let mut jittered = 0;
    for n in 1..=12u32 {
        f.pm.dial_failed(conn, DialFailure::Unreachable, t);
        assert_eq!(f.actions(), vec![Action::DialFailed { conn, addr: addr.clone() }]);
        let next = f.pm.next_redial(&peer).expect("redial scheduled");
        assert_eq!(f.pm.poll_timeout(), Some(next));
        assert_backoff(next - t, n);
        let nominal = (0.5 * 2f64.powi(n as i32 - 1)).min(60.0);
        if ((next - t).as_secs_f64() - nominal).abs() > nominal * 0.01 {
            jittered += 1;
        }
        f.pm.handle_timeout(next - ms(1));
        assert_eq!(f.actions(), vec![], "not before its time");
        f.pm.handle_timeout(next);
        let (c, a) = single_dial(&mut f);
        assert_eq!(a, addr);
        assert_eq!(f.pm.next_redial(&peer), None);
        (conn, t) = (c, next);
    }
    assert!(jittered >= 6, "jitter is applied ({jittered} of 12 delays off nominal)");
}

#[test]
fn backoff_resets_only_after_a_stable_connection() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (mut conn, _) = single_dial(&mut f);
    let mut t = f.at(secs(0));
    for _ in 0..3 {
        f.pm.dial_failed(conn, DialFailure::Timeout, t);
        f.actions();
        t = f.pm.next_redial(&peer).unwrap();
        f.pm.handle_timeout(t);
        conn = single_dial(&mut f).0;
    }
    // Connected for 10 s only: the next delay keeps growing (4th failure: 4 s nominal).
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), t);
    f.actions();
    let down = t + secs(10);
    f.pm.connection_closed(conn, down);
    assert_eq!(
        f.actions(),
        vec![Action::PeerDisconnected { peer, reason: Reason::ConnectionLost }]
    );
    let next = f.pm.next_redial(&peer).unwrap();
    assert_backoff(next - down, 4);
    assert_eq!(f.pm.redial_failures(&peer), Some(4));
    f.pm.handle_timeout(next);
    let conn = single_dial(&mut f).0;
    // Connected for 31 s (more than stable_after): back to the first delay.
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), next);
    f.actions();
    let down = next + secs(31);
    f.pm.connection_closed(conn, down);
    f.actions();
    assert_backoff(f.pm.next_redial(&peer).unwrap() - down, 1);
    assert_eq!(f.pm.redial_failures(&peer), Some(1));
}

#[test]
fn redials_rotate_through_the_addresses() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let (a1, a2) = (addr_of(peer, 1), addr_of(peer, 2));
    f.pm.add_peer(a1.clone(), f.at(secs(0))).unwrap();
    let (mut conn, first) = single_dial(&mut f);
    assert_eq!(first, a1);
    f.pm.add_peer(a2.clone(), f.at(secs(0))).unwrap();
    assert_eq!(f.actions(), vec![], "already being dialled");
    let mut dialled = Vec::new();
    for _ in 0..4 {
        f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(0)));
        f.actions();
        f.pm.handle_timeout(f.pm.next_redial(&peer).unwrap());
        let (c, addr) = single_dial(&mut f);
        dialled.push(addr);
        conn = c;
    }
    assert_eq!(dialled, vec![a2.clone(), a1.clone(), a2, a1]);
}

#[test]
fn remove_peer_stops_redials_and_closes_with_removed() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (conn, _) = single_dial(&mut f);
    f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(0)));
    f.actions();
    assert!(f.pm.next_redial(&peer).is_some());
    f.pm.remove_peer(&peer, f.at(secs(0)));
    assert_eq!(f.pm.next_redial(&peer), None);
    assert_eq!(f.pm.poll_timeout(), None);
    assert!(f.pm.persistent_peers().is_empty());
    f.pm.handle_timeout(f.at(secs(600)));
    assert_eq!(f.actions(), vec![]);

    // Removing a connected persistent peer closes it and does not redial.
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(600))).unwrap();
    let (conn, _) = single_dial(&mut f);
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), f.at(secs(600)));
    f.actions();
    f.pm.remove_peer(&peer, f.at(secs(601)));
    assert_eq!(f.actions(), vec![Action::Close { conn, reason: Reason::Removed }]);
    f.pm.connection_closed(conn, f.at(secs(602)));
    assert_eq!(f.actions(), vec![Action::PeerDisconnected { peer, reason: Reason::Removed }]);
    assert_eq!(f.pm.next_redial(&peer), None);
    f.pm.handle_timeout(f.at(secs(1200)));
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn remove_peer_cancels_a_pending_dial() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (conn, addr) = single_dial(&mut f);
    f.pm.remove_peer(&peer, f.at(secs(0)));
    assert_eq!(
        f.actions(),
        vec![Action::DialFailed { conn, addr }, Action::Close { conn, reason: Reason::Removed }]
    );
    assert_eq!(f.pm.counts().pending_handshakes, 0);
    f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(1)));
    assert_eq!(f.actions(), vec![], "already reported");
    assert_eq!(f.pm.counts().total, 0);
}

#[test]
fn a_disconnected_persistent_peer_is_redialled() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (conn, addr) = single_dial(&mut f);
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), f.at(secs(0)));
    f.actions();
    assert_eq!(f.pm.next_redial(&peer), None);
    f.pm.connection_closed(conn, f.at(secs(100)));
    f.actions();
    let next = f.pm.next_redial(&peer).unwrap();
    assert_backoff(next - f.at(secs(100)), 1);
    f.pm.handle_timeout(next);
    assert_eq!(single_dial(&mut f).1, addr);
}

#[test]
fn an_inbound_connection_cancels_a_scheduled_redial() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let (conn, _) = single_dial(&mut f);
    f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(0)));
    f.actions();
    assert!(f.pm.next_redial(&peer).is_some());
    f.connect_in(0, secs(0));
    assert_eq!(f.pm.next_redial(&peer), None);
    f.pm.handle_timeout(f.at(secs(10)));
    assert!(f.actions().iter().all(|a| !matches!(a, Action::Dial { .. })));
}

#[test]
fn an_address_without_peer_id_is_bound_at_its_handshake() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let bare = Addr::tcp(SocketAddr::from(([10, 0, 0, 8], 4001)));
    f.pm.add_peer(bare.clone(), f.at(secs(0))).unwrap();
    assert_eq!(f.pm.unbound_persistent_addrs(), vec![bare.clone()]);
    let (conn, addr) = single_dial(&mut f);
    assert_eq!(addr, bare);
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), f.at(secs(1)));
    f.actions();
    assert_eq!(f.pm.persistent_peers(), vec![peer]);
    assert!(f.pm.unbound_persistent_addrs().is_empty());
    // Adding the bare address again is a no-op; the redial now names the peer.
    f.pm.add_peer(bare.clone(), f.at(secs(1))).unwrap();
    assert_eq!(f.actions(), vec![]);
    f.pm.connection_closed(conn, f.at(secs(100)));
    f.actions();
    f.pm.handle_timeout(f.pm.next_redial(&peer).unwrap());
    assert_eq!(single_dial(&mut f).1, bare.with_peer(peer));
}

#[test]
fn an_address_that_leads_back_to_us_is_forgotten() {
    let mut f = Fixture::new(PeersConfig::default());
    let bare = Addr::tcp(SocketAddr::from(([10, 0, 0, 8], 4001)));
    f.pm.add_peer(bare, f.at(secs(0))).unwrap();
    let (conn, _) = single_dial(&mut f);
    f.pm.dial_failed(conn, DialFailure::SelfConnection, f.at(secs(0)));
    f.actions();
    assert!(f.pm.unbound_persistent_addrs().is_empty());
    assert_eq!(f.pm.poll_timeout(), None);
}

#[test]
fn a_one_shot_dial_and_a_persistent_peer_share_the_dial() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let conn = f.dial(0, secs(0));
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    assert_eq!(f.actions(), vec![], "the pending dial serves both");
    f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(1)));
    f.actions();
    assert!(f.pm.next_redial(&peer).is_some(), "the persistent peer redials");
}
