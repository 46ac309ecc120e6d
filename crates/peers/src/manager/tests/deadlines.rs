//! Ping, idle and authorization deadlines on virtual time.

use super::*;
use crate::Reason;

fn no_idle() -> PeersConfig {
    PeersConfig { idle_timeout: None, ..PeersConfig::default() }
}

/// Runs deadlines until `until`, answering every ping at once, and returns the other actions.
fn run_answering(f: &mut Fixture, until: Duration) -> Vec<(Duration, Action)> {
    let mut out = Vec::new();
    while let Some(deadline) = f.pm.poll_timeout().filter(|d| *d <= f.at(until)) {
        f.pm.handle_timeout(deadline);
        for action in f.actions() {
            match action {
                Action::SendPing { conn, nonce } => f.pm.pong(conn, nonce, deadline),
                other => out.push((deadline - f.base, other)),
            }
        }
    }
    out
}

#[test]
fn unanswered_pings_close_after_exactly_max_missed_pings() {
    let mut f = Fixture::new(no_idle());
    let conn = f.connect_out(0, secs(0));
    let out = f.run_until(secs(200));
    let times: Vec<Duration> = out.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![secs(15), secs(30), secs(45), secs(55)], "{out:?}");
    assert!(
        out[..3].iter().all(|(_, a)| matches!(a, Action::SendPing { conn: c, .. } if *c == conn))
    );
    // Three pings sent at 15, 30 and 45 s; the third one's timeout at 45 + 10 s closes it.
    assert_eq!(out[3].1, Action::Close { conn, reason: Reason::PingTimeout });
    assert_eq!(f.pm.connection(conn).unwrap().missed_pings, 3);
    f.pm.connection_closed(conn, f.at(secs(56)));
    let peer = f.remotes[0];
    assert_eq!(f.actions(), vec![Action::PeerDisconnected { peer, reason: Reason::PingTimeout }]);
}

#[test]
fn a_pong_resets_the_missed_count_and_records_the_rtt() {
    let mut f = Fixture::new(no_idle());
    let conn = f.connect_out(0, secs(0));
    let first = f.run_until(secs(15));
    let [(_, Action::SendPing { nonce, .. })] = first.as_slice() else { panic!("{first:?}") };
    // A pong with another nonce is ignored.
    f.pm.pong(conn, nonce.wrapping_add(1), f.at(ms(15_100)));
    assert_eq!(f.pm.connection(conn).unwrap().rtt, None);
    f.pm.pong(conn, *nonce, f.at(ms(15_200)));
    let view = f.pm.connection(conn).unwrap();
    assert_eq!(view.rtt, Some(ms(200)));
    assert_eq!(view.missed_pings, 0);
    // Miss the ping of 30 s (counted at 40 s), then answer the one at 45 s.
    f.run_until(secs(40));
    assert_eq!(f.pm.connection(conn).unwrap().missed_pings, 1);
    let out = f.run_until(secs(45));
    let [(_, Action::SendPing { nonce, .. })] = out.as_slice() else { panic!("{out:?}") };
    f.pm.pong(conn, *nonce, f.at(ms(45_050)));
    let view = f.pm.connection(conn).unwrap();
    assert_eq!((view.missed_pings, view.rtt), (0, Some(ms(50))));
    // A late pong for a ping already counted missed changes nothing.
    let out = f.run_until(secs(70));
    let (_, Action::SendPing { nonce: late, .. }) = out[0] else { panic!("{out:?}") };
    f.pm.pong(conn, late, f.at(ms(70_001)));
    assert_eq!(f.pm.connection(conn).unwrap().missed_pings, 1);
    // From the reset on, it takes three more misses: pings at 60, 75, 90 -> close at 100.
    let out = f.run_until(secs(200));
    let close = out.iter().find(|(_, a)| matches!(a, Action::Close { .. }));
    assert_eq!(close, Some(&(secs(100), Action::Close { conn, reason: Reason::PingTimeout })));
}

#[test]
fn idle_timeout_ignores_pings_and_counts_activity() {
    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.connect_out(0, secs(0));
    // Pings are answered all along, yet the connection is idle after 60 s.
    let out = run_answering(&mut f, secs(300));
    assert_eq!(out, vec![(secs(60), Action::Close { conn, reason: Reason::Idle })]);

    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.connect_out(0, secs(0));
    f.pm.activity(conn, f.at(secs(30)));
    let out = run_answering(&mut f, secs(300));
    assert_eq!(out, vec![(secs(90), Action::Close { conn, reason: Reason::Idle })]);
}

#[test]
fn an_open_stream_prevents_idle() {
    let mut f = Fixture::new(PeersConfig::default());
    let conn = f.connect_out(0, secs(0));
    f.pm.stream_opened(conn, f.at(secs(10)));
    f.pm.stream_opened(conn, f.at(secs(11)));
    f.pm.stream_closed(conn, f.at(secs(20)));
    assert_eq!(run_answering(&mut f, secs(300)), vec![], "one stream is still open");
    assert_eq!(f.pm.connection(conn).unwrap().open_streams, 1);
    f.pm.stream_closed(conn, f.at(secs(300)));
    let out = run_answering(&mut f, secs(600));
    assert_eq!(out, vec![(secs(360), Action::Close { conn, reason: Reason::Idle })]);
}

#[test]
fn persistent_peers_are_exempt_from_idle() {
    let mut f = Fixture::new(PeersConfig::default());
    let peer = f.remotes[0];
    f.pm.add_peer(addr_of(peer, 1), f.at(secs(0))).unwrap();
    let [Action::Dial { conn, .. }] = f.actions()[..] else { panic!() };
    f.pm.handshake_succeeded(conn, est(peer, Direction::Outbound, 1, 1), f.at(secs(0)));
    f.actions();
    assert_eq!(run_answering(&mut f, secs(3600)), vec![]);
    assert_eq!(f.pm.active_connection(&peer), Some(conn));
    // Once removed, it is an ordinary peer again: it is closed as removed, not idle.
    f.pm.remove_peer(&peer, f.at(secs(3600)));
    assert_eq!(f.actions(), vec![Action::Close { conn, reason: Reason::Removed }]);
}

#[test]
fn unauthorized_connections_are_closed_at_the_auth_timeout() {
    let config = PeersConfig { default_authorized: false, ..no_idle() };
    let mut f = Fixture::new(config.clone());
    let conn = f.connect_in(0, secs(0));
    assert!(!f.pm.is_authorized(conn));
    let out = run_answering(&mut f, secs(60));
    assert_eq!(out, vec![(secs(10), Action::Close { conn, reason: Reason::Unauthorized })]);
    f.pm.connection_closed(conn, f.at(secs(11)));
    let peer = f.remotes[0];
    assert_eq!(f.actions(), vec![Action::PeerDisconnected { peer, reason: Reason::Unauthorized }]);

    // Authorized in time: kept.
    let mut f = Fixture::new(config);
    let conn = f.connect_in(0, secs(0));
    f.pm.authorize(&f.remotes[0], f.at(secs(5)));
    assert!(f.pm.is_authorized(conn));
    assert_eq!(run_answering(&mut f, secs(600)), vec![]);
}

#[test]
fn the_default_policy_authorizes_at_once() {
    let mut f = Fixture::new(no_idle());
    let conn = f.connect_in(0, secs(0));
    assert!(f.pm.is_authorized(conn));
    assert!(f.pm.connection(conn).unwrap().authorized);
    assert_eq!(run_answering(&mut f, secs(600)), vec![]);
}

#[test]
fn a_duplicate_swap_does_not_extend_the_auth_deadline() {
    let mut f = Fixture::new(PeersConfig { default_authorized: false, ..no_idle() });
    let peer = f.remotes[0];
    let (old, new) = if f.local < peer {
        // Our outbound wins over an inbound: connect inbound first.
        let old = f.connect_in(0, secs(0));
        let new = f.dial_bare(1, secs(8));
        f.pm.handshake_succeeded(new, est(peer, Direction::Outbound, 1, 1), f.at(secs(8)));
        (old, new)
    } else {
        let old = f.connect_out(0, secs(0));
        let new = f.pm.inbound(socket(1, 1), f.at(secs(8))).unwrap();
        f.pm.handshake_succeeded(new, est(peer, Direction::Inbound, 1, 1), f.at(secs(8)));
        (old, new)
    };
    assert!(f.actions().contains(&Action::ConnectionReplaced { peer, old, new }));
    let closes: Vec<_> = run_answering(&mut f, secs(60))
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::Close { reason: Reason::Unauthorized, .. }))
        .collect();
    assert_eq!(closes, vec![(secs(10), Action::Close { conn: new, reason: Reason::Unauthorized })]);
}
