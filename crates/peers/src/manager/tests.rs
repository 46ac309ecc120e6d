//! Tests of the manager on virtual time: `base + Duration`, never the clock.

mod deadlines;
mod dialing;
mod duplicate;
mod lifecycle;
mod limits;
mod persistent;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sinew_types::Direction;
use sinew_types::{Addr, Keypair, PeerId};

use crate::{Action, ConnId, DialTicket, Established, PeerManager, PeersConfig};

/// `n` peer ids from a seeded RNG.
fn peer_ids(n: usize, seed: u64) -> Vec<PeerId> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| Keypair::generate_with(&mut rng).peer_id()).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An address for `peer` on host 10.0.0.`host`.
fn addr_of(peer: PeerId, host: u8) -> Addr {
    Addr::tcp(SocketAddr::from(([10, 0, 0, host], 4001))).with_peer(peer)
}

fn socket(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, host], port))
}

fn est(peer: PeerId, direction: Direction, boot_nonce: u64, tag: u8) -> Established {
    Established {
        peer,
        direction,
        remote_addr: Addr::tcp(SocketAddr::from(([10, 0, 0, 99], 4001))),
        boot_nonce,
        session_tag: [tag; 32],
    }
}

/// A manager on virtual time plus a few remote peers.
struct Fixture {
    pm: PeerManager,
    base: Instant,
    local: PeerId,
    remotes: Vec<PeerId>,
}

impl Fixture {
    fn new(config: PeersConfig) -> Self {
        Self::with_seed(config, 1)
    }

    fn with_seed(config: PeersConfig, seed: u64) -> Self {
        let ids = peer_ids(5, 100 + seed);
        let local = ids[0];
        let pm = PeerManager::new(local, config, seed).expect("valid config");
        Self { pm, base: crate::fuzzing::origin(), local, remotes: ids[1..].to_vec() }
    }

    fn at(&self, d: Duration) -> Instant {
        self.base + d
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.pm.poll_action()).collect()
    }

    /// Dials remote `i` and returns the new connection, checking the Dial action.
    fn dial(&mut self, i: usize, t: Duration) -> ConnId {
        let addr = addr_of(self.remotes[i], i as u8 + 1);
        let ticket = self.pm.dial(addr.clone(), self.at(t)).expect("dial admitted");
        let DialTicket::Pending(conn) = ticket else { panic!("not a new dial: {ticket:?}") };
        assert_eq!(self.actions(), vec![Action::Dial { conn, addr }]);
        conn
    }

    /// Dials host 10.0.0.`host` by a bare address (no peer id, so never `Connected`).
    fn dial_bare(&mut self, host: u8, t: Duration) -> ConnId {
        let addr = Addr::tcp(SocketAddr::from(([10, 0, 0, host], 4001)));
        let ticket = self.pm.dial(addr.clone(), self.at(t)).expect("dial admitted");
        let DialTicket::Pending(conn) = ticket else { panic!("not a new dial: {ticket:?}") };
        assert_eq!(self.actions(), vec![Action::Dial { conn, addr }]);
        conn
    }

    /// An outbound connection to remote `i`, established at `t` (actions drained).
    fn connect_out(&mut self, i: usize, t: Duration) -> ConnId {
        let conn = self.dial(i, t);
        self.pm.handshake_succeeded(
            conn,
            est(self.remotes[i], Direction::Outbound, 1, 1),
            self.at(t),
        );
        let actions = self.actions();
        assert!(
            actions.contains(&Action::DialSucceeded { conn, peer: self.remotes[i] }),
            "{actions:?}"
        );
        conn
    }

    /// An inbound connection from remote `i`, established at `t` (actions drained).
    fn connect_in(&mut self, i: usize, t: Duration) -> ConnId {
        let conn =
            self.pm.inbound(socket(i as u8 + 1, 5000), self.at(t)).expect("inbound admitted");
        self.pm.handshake_succeeded(
            conn,
            est(self.remotes[i], Direction::Inbound, 1, 1),
            self.at(t),
        );
        let direction = Direction::Inbound;
        let peer = self.remotes[i];
        assert_eq!(self.actions(), vec![Action::PeerConnected { peer, conn, direction }]);
        conn
    }

    /// Runs every deadline up to and including `until`, the way a node's timer would, and
    /// returns the actions with the offset from `base` at which each was produced.
    fn run_until(&mut self, until: Duration) -> Vec<(Duration, Action)> {
        let mut out = Vec::new();
        while let Some(deadline) = self.pm.poll_timeout() {
            if deadline > self.at(until) {
                break;
            }
            self.pm.handle_timeout(deadline);
            assert!(self.pm.poll_timeout().is_none_or(|next| next > deadline));
            for action in self.actions() {
                out.push((deadline - self.base, action));
            }
            self.pm.check_invariants();
        }
        out
    }
}
