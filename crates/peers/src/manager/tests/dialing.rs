//! Dial coalescing, dial results, and the guards around handshakes.

use super::*;
use crate::{ConnState, DialFailure, Reason, Refusal};

#[test]
fn two_dials_to_one_peer_share_one_dial_and_a_connected_peer_is_not_dialled() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let conn = f.dial(0, secs(0));
    // The same peer id at another address still shares the pending dial.
    assert_eq!(f.pm.dial(addr_of(peer, 1), f.at(ms(1))), Ok(DialTicket::Pending(conn)));
    assert_eq!(f.pm.dial(addr_of(peer, 7), f.at(ms(2))), Ok(DialTicket::Pending(conn)));
    assert_eq!(f.actions(), vec![], "no second Dial");
    assert_eq!(f.pm.counts().outbound, 1);
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), f.at(ms(50)));
    f.actions();
    assert_eq!(f.pm.dial(addr_of(peer, 1), f.at(ms(60))), Ok(DialTicket::Connected(peer)));
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn dials_to_a_bare_address_coalesce_by_address() {
    let mut f = Fixture::new(PeersConfig::default());
    let bare = Addr::tcp(SocketAddr::from(([10, 0, 0, 5], 4001)));
    let Ok(DialTicket::Pending(conn)) = f.pm.dial(bare.clone(), f.at(secs(0))) else { panic!() };
    assert_eq!(f.pm.dial(bare.clone(), f.at(secs(0))), Ok(DialTicket::Pending(conn)));
    let other = Addr::tcp(SocketAddr::from(([10, 0, 0, 5], 4002)));
    let Ok(DialTicket::Pending(conn2)) = f.pm.dial(other, f.at(secs(0))) else { panic!() };
    assert_ne!(conn, conn2, "another port is another dial");
    assert_eq!(f.actions().len(), 2);
    // A dial failure reports the waiters once and frees the slot.
    f.pm.dial_failed(conn, DialFailure::Unreachable, f.at(secs(1)));
    assert_eq!(f.actions(), vec![Action::DialFailed { conn, addr: bare }]);
    assert_eq!(f.pm.connection(conn), None);
    assert_eq!(f.pm.counts().outbound, 1);
    assert_eq!(f.pm.counts().pending_handshakes, 1);
    // A late close for the finished id is ignored.
    f.pm.connection_closed(conn, f.at(secs(2)));
    assert_eq!(f.actions(), vec![]);
    f.pm.check_invariants();
}

#[test]
fn dialling_ourselves_is_refused() {
    let mut f = Fixture::new(PeersConfig::default());
    let me = addr_of(f.local, 1);
    assert_eq!(f.pm.dial(me.clone(), f.at(secs(0))), Err(Refusal::LocalPeer));
    assert_eq!(f.pm.add_peer(me, f.at(secs(0))), Err(Refusal::LocalPeer));
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn a_handshake_proving_another_peer_is_closed_and_reported_as_failed() {
    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.dial(0, secs(0));
    let impostor = f.remotes[1];
    f.pm.handshake_succeeded(conn, est(impostor, Direction::Outbound, 1, 1), f.at(secs(1)));
    assert_eq!(
        f.actions(),
        vec![
            Action::DialFailed { conn, addr: addr_of(f.remotes[0], 1) },
            Action::Close { conn, reason: Reason::UnexpectedPeer },
        ]
    );
    assert!(f.pm.connected_peers().is_empty());
    assert_eq!(f.pm.connection(conn).map(|v| v.state), Some(ConnState::Closing));
    assert_eq!(f.pm.counts().pending_handshakes, 0);
    // Our own id from an inbound handshake is refused the same way.
    let inbound = f.pm.inbound(socket(1, 1), f.at(secs(2))).unwrap();
    f.pm.handshake_succeeded(inbound, est(f.local, Direction::Inbound, 1, 1), f.at(secs(2)));
    assert_eq!(f.actions(), vec![Action::Close { conn: inbound, reason: Reason::UnexpectedPeer }]);
    f.pm.connection_closed(conn, f.at(secs(3)));
    f.pm.connection_closed(inbound, f.at(secs(3)));
    assert_eq!(f.actions(), vec![]);
    assert_eq!(f.pm.counts().total, 0);
}

#[test]
fn inputs_for_unknown_or_finished_connections_are_ignored() {
    let mut f = Fixture::new(PeersConfig::default());
    let ghost = ConnId(77);
    let now = f.at(secs(1));
    f.pm.handshake_succeeded(ghost, est(f.remotes[0], Direction::Inbound, 1, 1), now);
    f.pm.handshake_failed(ghost, now);
    f.pm.dial_failed(ghost, DialFailure::Timeout, now);
    f.pm.connection_closed(ghost, now);
    f.pm.pong(ghost, 5, now);
    f.pm.activity(ghost, now);
    f.pm.stream_opened(ghost, now);
    f.pm.stream_closed(ghost, now);
    f.pm.disconnect_received(ghost, crate::RemoteDisconnect::Other, now);
    assert_eq!(f.actions(), vec![]);
    // A second handshake result for an established connection changes nothing.
    let conn = f.connect_out(0, secs(2));
    f.pm.handshake_succeeded(conn, est(f.remotes[1], Direction::Outbound, 5, 5), f.at(secs(3)));
    f.pm.dial_failed(conn, DialFailure::Handshake, f.at(secs(3)));
    assert_eq!(f.actions(), vec![]);
    assert_eq!(f.pm.active_connection(&f.remotes[0]), Some(conn));
    f.pm.check_invariants();
}

#[test]
fn connection_ids_are_never_reused() {
    let mut f = Fixture::new(PeersConfig::default());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20u16 {
        let conn = f.pm.inbound(socket(1, i), f.at(secs(0))).unwrap();
        assert!(seen.insert(conn), "{conn} reused");
        f.pm.handshake_failed(conn, f.at(secs(0)));
    }
    assert_eq!(f.pm.counts().total, 0);
}
