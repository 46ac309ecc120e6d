//! One connection per peer: simultaneous dials, same-direction duplicates, restarts, and the
//! silent swap when the remote drains first.

use proptest::prelude::{Just, Strategy};

use super::*;
use crate::{ConnState, Reason, RemoteDisconnect};

/// One side of a two-node scenario.
struct Side {
    pm: PeerManager,
    me: PeerId,
    nonce: u64,
    actions: Vec<Action>,
}

impl Side {
    fn new(me: PeerId, seed: u64) -> Self {
        let pm = PeerManager::new(me, PeersConfig::default(), seed).expect("valid config");
        Self { pm, me, nonce: seed, actions: Vec::new() }
    }

    fn collect(&mut self) {
        self.actions.extend(std::iter::from_fn(|| self.pm.poll_action()));
    }

    fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.actions.iter().filter(|a| f(a)).count()
    }
}

/// A connection seen from both ends: `(conn id on A, conn id on B, direction on A, tag)`.
type Wire = (ConnId, ConnId, Direction, u8);

fn flip(d: Direction) -> Direction {
    match d {
        Direction::Inbound => Direction::Outbound,
        Direction::Outbound => Direction::Inbound,
    }
}

/// Completes the handshakes of `wires` on A in `order_a` and on B in `order_b`, then checks
/// that both keep the same wire, each drains the other exactly once, and the peer connected
/// exactly once without disconnecting. Returns the surviving wire.
fn complete(
    a: &mut Side,
    b: &mut Side,
    wires: [Wire; 2],
    order_a: [usize; 2],
    order_b: [usize; 2],
) -> Wire {
    let now = crate::fuzzing::origin();
    for i in order_a {
        let (conn, _, dir, tag) = wires[i];
        a.pm.handshake_succeeded(conn, est(b.me, dir, b.nonce, tag), now);
        a.pm.check_invariants();
    }
    for i in order_b {
        let (_, conn, dir, tag) = wires[i];
        b.pm.handshake_succeeded(conn, est(a.me, flip(dir), a.nonce, tag), now);
        b.pm.check_invariants();
    }
    a.collect();
    b.collect();
    let kept_a = a.pm.active_connection(&b.me).expect("A keeps one");
    let kept_b = b.pm.active_connection(&a.me).expect("B keeps one");
    let survivor = wires.iter().position(|w| w.0 == kept_a).expect("a known connection");
    assert_eq!(wires[survivor].1, kept_b, "A and B kept different connections");
    let loser = wires[1 - survivor];
    for (side, lost, kept) in [(&*a, loser.0, kept_a), (&*b, loser.1, kept_b)] {
        assert_eq!(side.count(|x| matches!(x, Action::Drain { .. })), 1, "{:?}", side.actions);
        assert!(side.actions.contains(&Action::Drain { conn: lost }));
        assert_eq!(side.count(|x| matches!(x, Action::PeerConnected { .. })), 1);
        assert_eq!(side.count(|x| matches!(x, Action::PeerDisconnected { .. })), 0);
        assert_eq!(side.count(|x| matches!(x, Action::Close { .. })), 0);
        assert_eq!(side.pm.connection(lost).map(|v| v.state), Some(ConnState::Draining));
        assert_eq!(side.pm.connection(kept).map(|v| v.state), Some(ConnState::Established));
    }
    wires[survivor]
}

#[test]
fn simultaneous_dial_keeps_the_same_connection_on_both_sides_in_every_order() {
    let mut lower_seen = [false; 2];
    for seed in 0..8 {
        let ids = peer_ids(2, seed);
        for order_a in [[0, 1], [1, 0]] {
            for order_b in [[0, 1], [1, 0]] {
                let mut a = Side::new(ids[0], 1000 + seed);
                let mut b = Side::new(ids[1], 2000 + seed);
                let now = crate::fuzzing::origin();
                // Each dials the other; each accepts the other's dial.
                let Ok(DialTicket::Pending(a_out)) = a.pm.dial(addr_of(b.me, 2), now) else {
                    panic!()
                };
                let Ok(DialTicket::Pending(b_out)) = b.pm.dial(addr_of(a.me, 1), now) else {
                    panic!()
                };
                let a_in = a.pm.inbound(socket(2, 6000), now).unwrap();
                let b_in = b.pm.inbound(socket(1, 6000), now).unwrap();
                let tags = [(seed as u8).wrapping_mul(37), (seed as u8).wrapping_mul(37) ^ 0x80];
                let wires = [
                    (a_out, b_in, Direction::Outbound, tags[0]),
                    (a_in, b_out, Direction::Inbound, tags[1]),
                ];
                let kept = complete(&mut a, &mut b, wires, order_a, order_b);
                // The one dialled by the lower peer id wins, whatever the tags.
                let lower_dialled = if a.me < b.me { a_out } else { a_in };
                assert_eq!(kept.0, lower_dialled);
                lower_seen[usize::from(a.me < b.me)] = true;
                // Both dials succeeded: each side's waiters reach the peer.
                assert!(a.actions.contains(&Action::DialSucceeded { conn: a_out, peer: b.me }));
                assert!(b.actions.contains(&Action::DialSucceeded { conn: b_out, peer: a.me }));
                // A ConnectionReplaced exactly when the survivor completed second.
                let a_swapped = a.count(|x| matches!(x, Action::ConnectionReplaced { .. }));
                assert_eq!(a_swapped == 1, wires[order_a[1]].0 == kept.0);
            }
        }
    }
    assert_eq!(lower_seen, [true, true], "both orders of the peer ids were covered");
}

#[test]
fn same_direction_duplicates_keep_the_lower_session_tag_on_both_sides() {
    let ids = peer_ids(2, 9);
    for (tag0, tag1) in [(3u8, 200u8), (200, 3)] {
        for order_a in [[0, 1], [1, 0]] {
            for order_b in [[0, 1], [1, 0]] {
                let mut a = Side::new(ids[0], 1);
                let mut b = Side::new(ids[1], 2);
                let now = crate::fuzzing::origin();
                // A dials B twice: once by peer id, once by a bare address at another host.
                let Ok(DialTicket::Pending(first)) = a.pm.dial(addr_of(b.me, 2), now) else {
                    panic!()
                };
                let bare = Addr::tcp(SocketAddr::from(([10, 0, 0, 3], 4001)));
                let Ok(DialTicket::Pending(second)) = a.pm.dial(bare, now) else { panic!() };
                assert_ne!(first, second);
                let b0 = b.pm.inbound(socket(1, 6000), now).unwrap();
                let b1 = b.pm.inbound(socket(1, 6001), now).unwrap();
                let wires = [
                    (first, b0, Direction::Outbound, tag0),
                    (second, b1, Direction::Outbound, tag1),
                ];
                let kept = complete(&mut a, &mut b, wires, order_a, order_b);
                assert_eq!(kept.3, tag0.min(tag1), "the lower tag wins");
            }
        }
    }
}

#[test]
fn a_new_boot_nonce_replaces_the_old_connection() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let old = f.connect_out(0, secs(0));
    let new = f.pm.inbound(socket(1, 7000), f.at(secs(5))).unwrap();
    f.pm.handshake_succeeded(new, est(peer, Direction::Inbound, 2, 9), f.at(secs(5)));
    assert_eq!(
        f.actions(),
        vec![
            Action::Close { conn: old, reason: Reason::Replaced },
            Action::PeerDisconnected { peer, reason: Reason::Restarted },
            Action::PeerConnected { peer, conn: new, direction: Direction::Inbound },
        ]
    );
    assert_eq!(f.pm.active_connection(&peer), Some(new));
    f.pm.connection_closed(old, f.at(secs(6)));
    assert_eq!(f.actions(), vec![], "the replaced connection ends silently");
    assert!(f.pm.is_connected(&peer));
    f.pm.check_invariants();
}

#[test]
fn a_losing_dial_still_reports_success_and_the_drain_times_out() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let inbound = f.connect_in(0, secs(0));
    // Our later dial to the same process loses or wins by rank; force a loss by direction:
    // with different directions the one dialled by the lower id wins.
    let dial = f.dial_bare(1, secs(1));
    f.pm.handshake_succeeded(dial, est(peer, Direction::Outbound, 1, 7), f.at(secs(1)));
    let actions = f.actions();
    let (loser, winner) = if f.local < peer { (inbound, dial) } else { (dial, inbound) };
    assert!(actions.contains(&Action::Drain { conn: loser }), "{actions:?}");
    assert!(actions.contains(&Action::DialSucceeded { conn: dial, peer }));
    assert_eq!(f.pm.active_connection(&peer), Some(winner));
    // The drain never finishes: closed at exactly drain_timeout.
    let out = f.run_until(secs(30));
    let closes: Vec<_> = out.iter().filter(|(_, a)| matches!(a, Action::Close { .. })).collect();
    assert_eq!(closes, vec![&(secs(6), Action::Close { conn: loser, reason: Reason::Duplicate })]);
    f.pm.connection_closed(loser, f.at(secs(7)));
    assert_eq!(f.actions(), vec![]);
    assert_eq!(f.pm.connected_peers(), vec![peer]);
}

#[test]
fn a_drain_that_finishes_in_time_is_not_closed() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let first = f.connect_out(0, secs(0));
    let second = f.pm.inbound(socket(1, 7001), f.at(secs(1))).unwrap();
    f.pm.handshake_succeeded(second, est(peer, Direction::Inbound, 1, 0), f.at(secs(1)));
    let drained = if f.local < peer { second } else { first };
    assert!(f.actions().contains(&Action::Drain { conn: drained }));
    f.pm.connection_closed(drained, f.at(secs(3)));
    let out = f.run_until(secs(10));
    assert!(out.iter().all(|(_, a)| !matches!(a, Action::Close { .. })), "{out:?}");
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn a_remote_drain_swaps_silently_even_when_the_old_connection_ends_first() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let old = f.connect_out(0, secs(0));
    // The remote already saw the duplicate and drains `old`; its successor is still in its
    // handshake here.
    let successor = f.pm.inbound(socket(1, 7002), f.at(secs(1))).unwrap();
    f.pm.disconnect_received(old, RemoteDisconnect::Duplicate, f.at(secs(1)));
    assert_eq!(f.actions(), vec![Action::Drain { conn: old }]);
    assert_eq!(f.pm.active_connection(&peer), Some(old), "still active while draining");
    assert_eq!(f.pm.dial(addr_of(peer, 1), f.at(secs(1))), Ok(DialTicket::Connected(peer)));
    f.pm.connection_closed(old, f.at(secs(2)));
    assert_eq!(f.actions(), vec![], "no PeerDisconnected while the successor is expected");
    assert!(f.pm.is_connected(&peer));
    f.pm.handshake_succeeded(successor, est(peer, Direction::Inbound, 1, 0), f.at(secs(3)));
    assert_eq!(f.actions(), vec![Action::ConnectionReplaced { peer, old, new: successor }]);
    assert_eq!(f.pm.active_connection(&peer), Some(successor));
    f.pm.check_invariants();
}

#[test]
fn a_remote_drain_without_successor_disconnects_after_the_drain_timeout() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let old = f.connect_out(0, secs(0));
    f.pm.disconnect_received(old, RemoteDisconnect::Duplicate, f.at(secs(1)));
    f.pm.connection_closed(old, f.at(secs(2)));
    assert_eq!(f.actions(), vec![Action::Drain { conn: old }]);
    let out = f.run_until(secs(20));
    assert_eq!(out, vec![(secs(7), Action::PeerDisconnected { peer, reason: Reason::Remote })]);
    assert!(!f.pm.is_connected(&peer));
}

#[test]
fn a_closing_active_connection_is_superseded_by_a_new_one() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    let old = f.connect_out(0, secs(0));
    f.pm.remove_peer(&peer, f.at(secs(1)));
    assert_eq!(f.actions(), vec![Action::Close { conn: old, reason: Reason::Removed }]);
    // The peer dials back before the old connection's I/O has ended.
    let new = f.pm.inbound(socket(1, 7003), f.at(secs(1))).unwrap();
    f.pm.handshake_succeeded(new, est(peer, Direction::Inbound, 1, 3), f.at(secs(1)));
    assert_eq!(
        f.actions(),
        vec![
            Action::PeerDisconnected { peer, reason: Reason::Removed },
            Action::PeerConnected { peer, conn: new, direction: Direction::Inbound },
        ]
    );
    f.pm.connection_closed(old, f.at(secs(2)));
    assert_eq!(f.actions(), vec![]);
    assert_eq!(f.pm.active_connection(&peer), Some(new));
}

/// Builds `dirs.len()` connections between A and B (direction as seen by A, distinct tags),
/// completes them on each side in the given orders, and returns both sides.
fn mesh(
    dirs: &[Direction],
    tags: &[u8],
    order_a: &[usize],
    order_b: &[usize],
    seed: u64,
) -> (Side, Side, Vec<Wire>) {
    let ids = peer_ids(2, seed);
    let mut a = Side::new(ids[0], 10 + seed);
    let mut b = Side::new(ids[1], 20 + seed);
    let now = crate::fuzzing::origin();
    let mut wires = Vec::new();
    for (k, (dir, tag)) in dirs.iter().zip(tags).enumerate() {
        // Bare addresses at distinct hosts: never coalesced, never answered `Connected`.
        let bare = Addr::tcp(SocketAddr::from(([10, 0, 2, k as u8], 4001)));
        let (on_a, on_b) = match dir {
            Direction::Outbound => {
                let Ok(DialTicket::Pending(x)) = a.pm.dial(bare, now) else { panic!() };
                (x, b.pm.inbound(socket(1, 6000 + k as u16), now).unwrap())
            }
            Direction::Inbound => {
                let Ok(DialTicket::Pending(y)) = b.pm.dial(bare, now) else { panic!() };
                (a.pm.inbound(socket(2, 6000 + k as u16), now).unwrap(), y)
            }
        };
        wires.push((on_a, on_b, *dir, *tag));
    }
    for &i in order_a {
        let (conn, _, dir, tag) = wires[i];
        a.pm.handshake_succeeded(conn, est(b.me, dir, b.nonce, tag), now);
        a.pm.check_invariants();
    }
    for &i in order_b {
        let (_, conn, dir, tag) = wires[i];
        b.pm.handshake_succeeded(conn, est(a.me, flip(dir), a.nonce, tag), now);
        b.pm.check_invariants();
    }
    a.collect();
    b.collect();
    (a, b, wires)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    #[test]
    fn any_number_of_duplicates_in_any_order_converge_on_one_connection(
        (dirs, tags, order_a, order_b) in (2usize..=4).prop_flat_map(|n| (
            proptest::collection::vec(proptest::bool::ANY, n),
            Just((0..n).map(|k| k as u8 * 50).collect::<Vec<u8>>()).prop_shuffle(),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )),
        seed in 0u64..4,
    ) {
        let dirs: Vec<Direction> =
            dirs.iter().map(|out| if *out { Direction::Outbound } else { Direction::Inbound }).collect();
        let (a, b, wires) = mesh(&dirs, &tags, &order_a, &order_b, seed);
        let kept_a = a.pm.active_connection(&b.me).unwrap();
        let kept_b = b.pm.active_connection(&a.me).unwrap();
        let survivor = wires.iter().find(|w| w.0 == kept_a).unwrap();
        proptest::prop_assert_eq!(survivor.1, kept_b);
        // The survivor is the minimum of the order both ends agree on.
        let preferred = if a.me < b.me { Direction::Outbound } else { Direction::Inbound };
        let best = wires.iter().min_by_key(|w| (w.2 != preferred, w.3)).unwrap();
        proptest::prop_assert_eq!(best.0, kept_a);
        for side in [&a, &b] {
            proptest::prop_assert_eq!(side.count(|x| matches!(x, Action::Drain { .. })), wires.len() - 1);
            proptest::prop_assert_eq!(side.count(|x| matches!(x, Action::PeerConnected { .. })), 1);
            proptest::prop_assert_eq!(side.count(|x| matches!(x, Action::PeerDisconnected { .. })), 0);
            proptest::prop_assert_eq!(side.count(|x| matches!(x, Action::Close { .. })), 0);
        }
    }
}
