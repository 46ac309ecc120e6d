//! Connection ends, shutdown, time going backwards, and determinism.

use super::*;
use crate::{ConfigError, ConnState, DialFailure, Reason, Refusal, RemoteDisconnect};

#[test]
fn an_unrequested_close_is_a_lost_connection_and_a_remote_close_is_remote() {
    let mut f = Fixture::new(PeersConfig::default());
    let (p0, p1) = (f.remotes[0], f.remotes[1]);
    let c0 = f.connect_out(0, secs(0));
    let c1 = f.connect_in(1, secs(0));
    f.pm.connection_closed(c0, f.at(secs(1)));
    assert_eq!(
        f.actions(),
        vec![Action::PeerDisconnected { peer: p0, reason: Reason::ConnectionLost }]
    );
    f.pm.disconnect_received(c1, RemoteDisconnect::Other, f.at(secs(2)));
    assert_eq!(f.actions(), vec![]);
    f.pm.connection_closed(c1, f.at(secs(2)));
    assert_eq!(f.actions(), vec![Action::PeerDisconnected { peer: p1, reason: Reason::Remote }]);
    assert!(f.pm.connected_peers().is_empty());
    assert_eq!(f.pm.counts().total, 0);
    assert_eq!(f.pm.poll_timeout(), None, "nothing left to time");
}

#[test]
fn shutdown_closes_everything_and_refuses_new_work() {
    let mut f = Fixture::new(PeersConfig::default());
    let active = f.connect_out(0, secs(0));
    let pending_out = f.dial(1, secs(0));
    let pending_in = f.pm.inbound(socket(3, 3), f.at(secs(0))).unwrap();
    f.pm.add_peer(addr_of(f.remotes[3], 4), f.at(secs(0))).unwrap();
    let (persistent_dial, persistent_addr) = match f.actions().as_slice() {
        [Action::Dial { conn, addr }] => (*conn, addr.clone()),
        other => panic!("{other:?}"),
    };
    f.pm.dial_failed(persistent_dial, DialFailure::Unreachable, f.at(secs(0)));
    assert_eq!(
        f.actions(),
        vec![Action::DialFailed { conn: persistent_dial, addr: persistent_addr }]
    );
    assert!(f.pm.next_redial(&f.remotes[3]).is_some());

    f.pm.shutdown(f.at(secs(1)));
    let shutdown = Reason::Shutdown;
    assert_eq!(
        f.actions(),
        vec![
            Action::Close { conn: active, reason: shutdown },
            Action::DialFailed { conn: pending_out, addr: addr_of(f.remotes[1], 2) },
            Action::Close { conn: pending_out, reason: shutdown },
            Action::Close { conn: pending_in, reason: shutdown },
        ]
    );
    assert!(f.pm.is_shutting_down());
    assert_eq!(f.pm.next_redial(&f.remotes[3]), None, "redials cancelled");
    assert_eq!(f.pm.dial(addr_of(f.remotes[2], 3), f.at(secs(1))), Err(Refusal::ShuttingDown));
    assert_eq!(f.pm.inbound(socket(4, 4), f.at(secs(1))), Err(Refusal::ShuttingDown));
    assert_eq!(f.pm.add_peer(addr_of(f.remotes[2], 3), f.at(secs(1))), Err(Refusal::ShuttingDown));
    // A handshake completing after the shutdown does not connect anyone.
    f.pm.handshake_succeeded(
        pending_in,
        est(f.remotes[2], Direction::Inbound, 1, 1),
        f.at(secs(1)),
    );
    assert_eq!(f.actions(), vec![]);
    for conn in [active, pending_out, pending_in] {
        f.pm.connection_closed(conn, f.at(secs(2)));
    }
    let peer = f.remotes[0];
    assert_eq!(f.actions(), vec![Action::PeerDisconnected { peer, reason: shutdown }]);
    assert_eq!(f.pm.counts().total, 0);
    assert_eq!(f.pm.poll_timeout(), None);
    f.pm.handle_timeout(f.at(secs(600)));
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn closing_connections_have_no_deadlines_but_still_count() {
    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.connect_out(0, secs(0));
    f.pm.remove_peer(&f.remotes[0], f.at(secs(0)));
    f.actions();
    assert_eq!(f.pm.connection(conn).map(|v| v.state), Some(ConnState::Closing));
    assert_eq!(f.pm.poll_timeout(), None);
    assert_eq!(f.pm.counts().total, 1);
    // A dial to the peer starts a new connection: the closing one is going away.
    assert!(matches!(
        f.pm.dial(addr_of(f.remotes[0], 1), f.at(secs(1))),
        Ok(DialTicket::Pending(_))
    ));
}

#[test]
fn time_never_runs_backwards() {
    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.connect_out(0, secs(100));
    // An input stamped earlier than one already seen is read as the latest time.
    f.pm.activity(conn, f.at(secs(1)));
    let out = f.run_until(secs(1000));
    let close = out.iter().find(|(_, a)| matches!(a, Action::Close { .. })).unwrap();
    // Pings go unanswered: closed at 100 + 55 s, not earlier.
    assert_eq!(close, &(secs(155), Action::Close { conn, reason: Reason::PingTimeout }));
}

#[test]
fn the_same_seed_and_inputs_give_the_same_outputs() {
    /// The redial times of eight failures in a row, and every action produced.
    fn run(seed: u64) -> (Vec<Duration>, Vec<Action>) {
        let mut f = Fixture::with_seed(PeersConfig::default(), seed);
        let peer = peer_ids(2, 77)[1];
        f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
        let (mut times, mut actions) = (Vec::new(), f.actions());
        let mut t = f.base;
        for _ in 0..8 {
            let Some(Action::Dial { conn, .. }) = actions.last().cloned() else { panic!() };
            f.pm.dial_failed(conn, DialFailure::Unreachable, t);
            t = f.pm.poll_timeout().unwrap();
            f.pm.handle_timeout(t);
            times.push(t - f.base);
            actions.extend(f.actions());
        }
        (times, actions)
    }
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0, "the seed drives the jitter");
}

#[test]
fn an_invalid_config_is_refused() {
    let config = PeersConfig { max_missed_pings: 0, ..PeersConfig::default() };
    let local = peer_ids(1, 0)[0];
    assert_eq!(PeerManager::new(local, config, 0).err(), Some(ConfigError::ZeroMissedPings));
}
