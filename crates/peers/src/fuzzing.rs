//! Operation-sequence harness for fuzz targets and property tests. Not part of the API.
//!
//! [`operations`] reads bytes as a sequence of inputs to a [`PeerManager`] with small limits,
//! plays the node's part (it knows only what the actions told it), and asserts after every
//! step:
//! - the manager's internal invariants: at most one active connection per peer, limit counts
//!   within their limits and equal to a recount, each connection in exactly one state;
//! - the event stream is consistent: `PeerConnected` and `PeerDisconnected` alternate per peer
//!   and match `connected_peers()`, every dial gets at most one `DialSucceeded`/`DialFailed`,
//!   commands only name connections the node knows;
//! - a connection disappears only when the node reports its end;
//! - after `handle_timeout(now)`, `poll_timeout()` is later than `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sinew_types::Direction;
use sinew_types::{Addr, Keypair, PeerId};

use crate::{
    Action, BackoffConfig, ConnId, ConnState, ConnectionLimits, DialFailure, Established,
    PeerManager, PeersConfig, Refusal, RemoteDisconnect,
};

#[cfg(test)]
mod tests;

/// Runs the operation sequence encoded in `data`; panics if an invariant breaks.
pub fn operations(data: &[u8]) {
    run(data);
}

/// What a run exercised: how many of each action kind, and of each refusal.
pub(crate) type Stats = BTreeMap<&'static str, usize>;

fn run(data: &[u8]) -> Stats {
    let mut harness = Harness::new(data);
    while let Some(op) = harness.input.next() {
        harness.step(op);
        harness.drain_actions();
        harness.check();
    }
    harness.stats
}

/// Small limits, so that the fuzzer reaches them.
fn small_config(default_authorized: bool) -> PeersConfig {
    PeersConfig {
        limits: ConnectionLimits {
            max_total: 6,
            max_inbound: 4,
            max_outbound: 4,
            max_pending_inbound: 3,
            max_pending_outbound: 3,
            max_per_ip: 2,
            max_pending_per_ip: 2,
        },
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_millis(500),
        max_missed_pings: 2,
        idle_timeout: Some(Duration::from_secs(5)),
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.2,
            stable_after: Duration::from_secs(2),
        },
        auth_timeout: Duration::from_secs(3),
        default_authorized,
        drain_timeout: Duration::from_secs(1),
    }
}

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    /// A number below `n` (0 once the input is exhausted).
    fn pick(&mut self, n: usize) -> usize {
        self.next().map_or(0, |b| usize::from(b) % n.max(1))
    }
}

struct Harness<'a> {
    input: Input<'a>,
    pm: PeerManager,
    now: Instant,
    local: PeerId,
    peers: Vec<PeerId>,
    /// Each remote peer's current boot nonce (bumped to simulate a restart).
    boot_nonces: Vec<u64>,
    /// Connections handed out and not yet reported ended.
    live: BTreeSet<ConnId>,
    /// Every connection ever handed out.
    seen: BTreeSet<ConnId>,
    /// Dials that got their `DialSucceeded` or `DialFailed`.
    dials_done: BTreeSet<ConnId>,
    last_ping: BTreeMap<ConnId, u64>,
    /// Peers connected according to the events.
    connected: BTreeSet<PeerId>,
    stats: Stats,
}

impl<'a> Harness<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut input = Input { data };
        let default_authorized = input.next().is_none_or(|b| b % 4 != 0);
        let seed = u64::from(input.next().unwrap_or(0));
        let local = Keypair::from_secret_bytes([1; 32]).peer_id();
        let peers: Vec<PeerId> =
            (2..6u8).map(|i| Keypair::from_secret_bytes([i; 32]).peer_id()).collect();
        let pm = PeerManager::new(local, small_config(default_authorized), seed)
            .unwrap_or_else(|e| panic!("the harness config is valid: {e}"));
        Self {
            input,
            pm,
            now: origin(),
            local,
            boot_nonces: vec![0; peers.len()],
            peers,
            live: BTreeSet::new(),
            seen: BTreeSet::new(),
            dials_done: BTreeSet::new(),
            last_ping: BTreeMap::new(),
            connected: BTreeSet::new(),
            stats: Stats::new(),
        }
    }

    fn peer(&mut self) -> PeerId {
        let i = self.input.pick(self.peers.len());
        self.peers[i]
    }

    /// An address: one of three hosts, with one of the peers' ids, our own, or none.
    fn addr(&mut self) -> Addr {
        let host = self.input.pick(3) as u8;
        let socket = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host + 1)), 4000);
        let addr = Addr::tcp(socket);
        match self.input.pick(8) {
            0..=3 => addr.with_peer(self.peers[usize::from(host)]),
            4 => addr.with_peer(self.peer()),
            5 => addr.with_peer(self.local),
            _ => addr,
        }
    }

    /// A connection the manager knows (in `state` if given), or now and then an unknown id.
    fn conn(&mut self, state: Option<ConnState>) -> ConnId {
        let mut ids: Vec<ConnId> = self
            .pm
            .connections()
            .filter(|id| {
                state.is_none_or(|s| self.pm.connection(*id).is_some_and(|v| v.state == s))
            })
            .collect();
        ids.push(ConnId(u64::MAX));
        ids[self.input.pick(ids.len())]
    }

    fn step(&mut self, op: u8) {
        let now = self.now;
        if op == 0xff {
            self.pm.shutdown(now);
            return;
        }
        match op % 20 {
            0 | 1 => {
                let addr = self.addr();
                match self.pm.dial(addr, now) {
                    Ok(crate::DialTicket::Pending(id)) => {
                        assert!(self.pm.connection(id).is_some(), "dial ticket names unknown {id}");
                    }
                    Ok(crate::DialTicket::Connected(peer)) => {
                        assert!(self.pm.is_connected(&peer));
                        self.count("dial connected");
                    }
                    Err(refusal) => self.count_refusal(&refusal),
                }
            }
            2 => {
                let addr = self.addr();
                let _ = self.pm.add_peer(addr, now);
            }
            3 => {
                let peer = self.peer();
                self.pm.remove_peer(&peer, now);
            }
            4 | 5 => {
                let host = self.input.pick(3) as u8;
                let port = 5000 + self.input.pick(200) as u16;
                let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, host)), port);
                match self.pm.inbound(remote, now) {
                    Ok(id) => {
                        assert!(self.seen.insert(id), "{id} handed out twice");
                        self.live.insert(id);
                    }
                    Err(refusal) => self.count_refusal(&refusal),
                }
            }
            6 | 7 => self.handshake(now),
            8 => {
                let id = self.conn(Some(ConnState::Pending));
                self.report_failure(id, |pm| pm.handshake_failed(id, now));
            }
            9 => {
                let id = self.conn(None);
                let kind = [
                    DialFailure::Unreachable,
                    DialFailure::Timeout,
                    DialFailure::Handshake,
                    DialFailure::SelfConnection,
                ][self.input.pick(4)];
                self.report_failure(id, |pm| pm.dial_failed(id, kind, now));
            }
            10 | 11 => {
                let state = if op.is_multiple_of(2) { Some(ConnState::Closing) } else { None };
                let id = self.conn(state);
                self.pm.connection_closed(id, now);
                assert!(self.pm.connection(id).is_none(), "{id} survived connection_closed");
                self.live.remove(&id);
            }
            12 => {
                let id = self.conn(Some(ConnState::Established));
                let nonce = match self.input.pick(4) {
                    0 => self.input.pick(256) as u64,
                    _ => self.last_ping.get(&id).copied().unwrap_or(0),
                };
                self.pm.pong(id, nonce, now);
            }
            13 => {
                let id = self.conn(None);
                self.pm.activity(id, now);
            }
            14 => {
                let id = self.conn(None);
                self.pm.stream_opened(id, now);
            }
            15 => {
                let id = self.conn(None);
                // The incremental report, or the absolute one a coalescing driver sends.
                match self.input.pick(5) {
                    0 => self.pm.stream_closed(id, now),
                    n => self.pm.streams_open(id, n as u32 - 1, now),
                }
            }
            16 => {
                let peer = self.peer();
                self.pm.authorize(&peer, now);
            }
            17 => {
                const STEPS_MS: [u64; 8] = [1, 20, 100, 450, 1_000, 2_500, 10_000, 120_000];
                self.now += Duration::from_millis(STEPS_MS[self.input.pick(STEPS_MS.len())]);
            }
            18 => {
                // Jump to the next deadline (or stay), as a node's timer would.
                if self.input.pick(2) == 0
                    && let Some(deadline) = self.pm.poll_timeout()
                {
                    self.now = self.now.max(deadline);
                }
                let now = self.now;
                self.pm.handle_timeout(now);
                if let Some(next) = self.pm.poll_timeout() {
                    assert!(next > now, "deadline {next:?} not after handle_timeout({now:?})");
                }
            }
            _ => {
                let id = self.conn(None);
                let kind = if self.input.pick(2) == 0 {
                    RemoteDisconnect::Duplicate
                } else {
                    RemoteDisconnect::Other
                };
                self.pm.disconnect_received(id, kind, now);
            }
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_insert(0) += 1;
    }

    fn count_refusal(&mut self, refusal: &Refusal) {
        self.count(match refusal {
            Refusal::Total { .. } => "refused total",
            Refusal::Inbound { .. } => "refused inbound",
            Refusal::Outbound { .. } => "refused outbound",
            Refusal::PendingHandshakes { .. } => "refused pending",
            Refusal::PendingPerIp { .. } => "refused pending per ip",
            Refusal::PerIp { .. } => "refused per ip",
            Refusal::ShuttingDown => "refused shutting down",
            Refusal::LocalPeer => "refused local peer",
        });
    }

    fn handshake(&mut self, now: Instant) {
        let id = self.conn(Some(ConnState::Pending));
        let Some(view) = self.pm.connection(id) else {
            let established = self.established(self.peers[0], Direction::Inbound);
            self.pm.handshake_succeeded(id, established, now);
            return;
        };
        let peer = match (view.peer, self.input.pick(8)) {
            (_, 0) => self.local,
            (Some(expected), 1..=5) => expected,
            _ => self.peer(),
        };
        if let Some(i) = self.peers.iter().position(|p| *p == peer)
            && self.input.pick(6) == 0
        {
            self.boot_nonces[i] += 1;
        }
        let established = self.established(peer, view.direction);
        self.pm.handshake_succeeded(id, established, now);
    }

    fn established(&mut self, peer: PeerId, direction: Direction) -> Established {
        let nonce = self.peers.iter().position(|p| *p == peer).map_or(0, |i| self.boot_nonces[i]);
        let tag = self.input.pick(4) as u8;
        Established {
            peer,
            direction,
            remote_addr: Addr::tcp(SocketAddr::from(([10, 0, 0, 9], 1))),
            boot_nonce: nonce,
            session_tag: [tag; 32],
        }
    }

    /// Reports a failure: the connection must disappear iff it never completed a handshake.
    fn report_failure(&mut self, id: ConnId, report: impl FnOnce(&mut PeerManager)) {
        let before = self.pm.connection(id);
        report(&mut self.pm);
        let after = self.pm.connection(id);
        match before {
            Some(view) if view.established_at.is_none() => {
                assert!(after.is_none(), "{id} survived its failure");
                self.live.remove(&id);
            }
            Some(_) => assert!(after.is_some(), "an established {id} vanished on a dial failure"),
            None => assert!(after.is_none()),
        }
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.pm.poll_action() {
            *self.stats.entry(action_kind(&action)).or_insert(0) += 1;
            match action {
                Action::Dial { conn, .. } => {
                    assert!(self.seen.insert(conn), "{conn} handed out twice");
                    self.live.insert(conn);
                }
                Action::Close { conn, .. } | Action::Drain { conn } => {
                    assert!(self.live.contains(&conn), "command for unknown {conn}");
                }
                Action::SendPing { conn, nonce } => {
                    assert!(self.live.contains(&conn), "ping on unknown {conn}");
                    self.last_ping.insert(conn, nonce);
                }
                Action::PeerConnected { peer, conn, .. } => {
                    assert!(self.connected.insert(peer), "PeerConnected twice for {peer}");
                    assert_ne!(peer, self.local, "connected to ourselves");
                    assert!(self.live.contains(&conn));
                }
                Action::PeerDisconnected { peer, .. } => {
                    assert!(self.connected.remove(&peer), "PeerDisconnected without PeerConnected");
                }
                Action::ConnectionReplaced { peer, old, new } => {
                    assert!(self.connected.contains(&peer), "replacement for a disconnected peer");
                    assert_ne!(old, new);
                    assert!(self.live.contains(&new));
                }
                Action::DialSucceeded { conn, .. } | Action::DialFailed { conn, .. } => {
                    assert!(self.seen.contains(&conn), "dial result for unknown {conn}");
                    assert!(self.dials_done.insert(conn), "{conn} got two dial results");
                }
            }
        }
    }

    fn check(&mut self) {
        self.pm.check_invariants();
        let reported: BTreeSet<PeerId> = self.pm.connected_peers().into_iter().collect();
        assert_eq!(reported, self.connected, "connected_peers() disagrees with the events");
        let known: BTreeSet<ConnId> = self.pm.connections().collect();
        assert_eq!(known, self.live, "a connection vanished or appeared unreported");
        if self.pm.is_shutting_down() {
            let addr = Addr::tcp(SocketAddr::from(([10, 0, 0, 1], 1)));
            assert_eq!(self.pm.dial(addr, self.now), Err(Refusal::ShuttingDown));
        }
    }
}

fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Dial { .. } => "Dial",
        Action::Close { reason, .. } => match reason {
            crate::Reason::Shutdown => "Close Shutdown",
            crate::Reason::Duplicate => "Close Duplicate",
            crate::Reason::Idle => "Close Idle",
            crate::Reason::PingTimeout => "Close PingTimeout",
            crate::Reason::Unauthorized => "Close Unauthorized",
            crate::Reason::Replaced => "Close Replaced",
            crate::Reason::Removed => "Close Removed",
            crate::Reason::UnexpectedPeer => "Close UnexpectedPeer",
            _ => "Close other",
        },
        Action::Drain { .. } => "Drain",
        Action::SendPing { .. } => "SendPing",
        Action::PeerConnected { .. } => "PeerConnected",
        Action::PeerDisconnected { .. } => "PeerDisconnected",
        Action::ConnectionReplaced { .. } => "ConnectionReplaced",
        Action::DialSucceeded { .. } => "DialSucceeded",
        Action::DialFailed { .. } => "DialFailed",
    }
}

/// The origin of virtual time. Only differences from it matter; reading the clock once here
/// is the one exception to the sans-IO rule, in test code.
#[allow(clippy::disallowed_methods)]
pub(crate) fn origin() -> Instant {
    Instant::now()
}
