//! Operation-sequence harness for the fuzz target and property tests. Not part of the API.
//!
//! [`operations`] reads bytes as a sequence of inputs to a [`Host`] with small bounds, plays
//! the driver's part (it knows only what the outputs told it), and asserts after every step:
//! - every frame, close and drain names a connection the driver runs; every abort one it
//!   dials or upgrades;
//! - each connection's system bytes out and not credited stay within the system lane's bound,
//!   and its protocol bytes within the credit (plus the one frame always allowed);
//! - `PeerConnected` and `PeerDisconnected` alternate per peer and match `connected_peers()`,
//!   which is sorted and agrees with `peer_info` and `is_connected`;
//! - each ping ends at most once;
//! - after `handle_timeout(now)`, `poll_timeout()` is later than `now`.
//!
//! Network input never panics: frames carry any opcode, kind, id and payload.

#![allow(clippy::disallowed_methods)] // the virtual clock's origin

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng as _;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_peers::{ConnId, DialFailure, Established, PeerManager, PeersConfig};
use sinew_protocol::Reason;
use sinew_types::{Addr, Direction, Keypair, PeerId};

use crate::{Host, HostConfig, HostEvent, Lane, Output, Transmit};

/// Runs the operation sequence encoded in `data`; panics if an invariant breaks.
pub fn operations(data: &[u8]) {
    let mut h = Harness::new(data);
    while let Some(op) = h.input.next() {
        h.step(op);
        h.drain();
        h.check();
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

/// A connection the driver runs, and what the host handed it that was not credited yet.
#[derive(Default)]
struct Running {
    system: usize,
    protocol: usize,
    closing: bool,
}

struct Harness<'a> {
    input: Input<'a>,
    host: Host,
    now: Instant,
    peers: Vec<PeerId>,
    /// Dials and upgrades in progress: connection -> dialled (peer index, if dialled).
    pending: BTreeMap<ConnId, Option<usize>>,
    running: BTreeMap<ConnId, Running>,
    connected: BTreeSet<PeerId>,
    pings_done: BTreeSet<u64>,
    config: HostConfig,
}

impl<'a> Harness<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut input = Input { data };
        let authorized = input.next().is_none_or(|b| b % 4 != 0);
        let local = Keypair::from_secret_bytes([1; 32]).peer_id();
        let peers: Vec<PeerId> =
            (2..6u8).map(|i| Keypair::from_secret_bytes([i; 32]).peer_id()).collect();
        let mut config = HostConfig::new(local);
        config.system_lane_bytes = 256;
        config.protocol_credit_bytes = 200;
        config.protocol_queue_bytes = 600;
        config.control_frame_cap = 128;
        config.keepalive_interval = Some(Duration::from_secs(2));
        config.request_timeout = Duration::from_secs(3);
        let mut peers_config = PeersConfig {
            default_authorized: authorized,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(500),
            ..PeersConfig::default()
        };
        peers_config.limits.max_total = 6;
        peers_config.limits.max_per_ip = 3;
        let manager = PeerManager::new(local, peers_config, 7)
            .unwrap_or_else(|e| panic!("the harness config is valid: {e}"));
        let now = Instant::now();
        let mut host = Host::new(config.clone(), manager, ChaCha8Rng::seed_from_u64(3), now);
        host.start(now);
        Self {
            input,
            host,
            now,
            peers,
            pending: BTreeMap::new(),
            running: BTreeMap::new(),
            connected: BTreeSet::new(),
            pings_done: BTreeSet::new(),
            config,
        }
    }

    fn addr(&self, i: usize) -> Addr {
        let ip = Ipv4Addr::new(10, 0, 0, u8::try_from(i + 1).unwrap_or(1));
        Addr::tcp(SocketAddr::new(IpAddr::V4(ip), 4001)).with_peer(self.peers[i])
    }

    fn pick_conn(&mut self, from: &[ConnId]) -> Option<ConnId> {
        if from.is_empty() {
            return None;
        }
        Some(from[self.input.pick(from.len())])
    }

    fn frame(&mut self) -> Frame {
        let opcodes = [
            Opcode::PING,
            Opcode::PONG,
            Opcode::IDENTIFY,
            Opcode::ACK,
            Opcode::KEEPALIVE,
            Opcode::KEEPALIVE_RESPONSE,
            Opcode::DISCONNECT,
        ];
        let which = self.input.pick(opcodes.len() + 3);
        let opcode = opcodes.get(which).copied().unwrap_or_else(|| {
            Opcode::app(1000 + 500 * (which as u32 - 7)).unwrap_or(Opcode::PING)
        });
        let id = match self.input.pick(4) {
            0 => 0,
            1 => u64::from(self.input.next().unwrap_or(0)),
            2 => crate::core::HOST_REQUEST_IDS + u64::from(self.input.next().unwrap_or(0)),
            _ => u64::MAX,
        };
        let kind = match self.input.pick(5) {
            0 => FrameKind::Message,
            1 => FrameKind::Acked { id },
            2 => FrameKind::Request { id },
            3 => FrameKind::Response { id },
            _ => FrameKind::Error { id, status: Status::BUSY },
        };
        let len = self.input.pick(40);
        let payload: Vec<u8> = (0..len).map(|_| self.input.next().unwrap_or(0)).collect();
        Frame::new(opcode, kind, Bytes::from(payload))
    }

    fn step(&mut self, op: u8) {
        let now = self.now;
        let running: Vec<ConnId> = self.running.keys().copied().collect();
        let pending: Vec<ConnId> = self.pending.keys().copied().collect();
        match op % 14 {
            0 => {
                let i = self.input.pick(4);
                let remote =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)), 5000);
                if let Ok(conn) = self.host.handle_inbound(remote, now) {
                    self.pending.insert(conn, None);
                }
            }
            1 => {
                let Some(conn) = self.pick_conn(&pending) else { return };
                let dialled = self.pending.remove(&conn).flatten();
                let i = dialled.unwrap_or_else(|| self.input.pick(4));
                let direction =
                    if dialled.is_some() { Direction::Outbound } else { Direction::Inbound };
                let established = Established {
                    peer: self.peers[i],
                    direction,
                    remote_addr: self.addr(i).without_peer(),
                    boot_nonce: u64::from(self.input.next().unwrap_or(0) % 2),
                    session_tag: [self.input.next().unwrap_or(0); 32],
                };
                if self.host.handle_established(conn, established, now) {
                    self.running.insert(conn, Running::default());
                }
            }
            2..=4 => {
                let Some(conn) = self.pick_conn(&running) else { return };
                let frame = self.frame();
                self.host.handle_frame(conn, frame, now);
            }
            5 => {
                let Some(conn) = self.pick_conn(&running) else { return };
                let Some(r) = self.running.get_mut(&conn) else { return };
                // The writer writes some of what it holds.
                if self.input.pick(2) == 0 {
                    let n = r.system.min(self.input.pick(300));
                    r.system -= n;
                    self.host.handle_write_credit(conn, Lane::System, n);
                } else {
                    let n = r.protocol.min(self.input.pick(300));
                    r.protocol -= n;
                    self.host.handle_write_credit(conn, Lane::Message, n);
                }
            }
            6 => {
                let Some(conn) = self.pick_conn(&running) else { return };
                self.running.remove(&conn);
                let reason = if self.input.pick(2) == 0 {
                    Reason::ConnectionLost
                } else {
                    Reason::Local(DisconnectCode::SHUTDOWN)
                };
                self.host.handle_closed(conn, reason, now);
            }
            7 => {
                self.now += Duration::from_millis(50 * (1 + self.input.pick(40) as u64));
                self.host.handle_timeout(self.now);
                if let Some(at) = self.host.poll_timeout() {
                    assert!(at > self.now, "a deadline at or before now after handle_timeout");
                }
            }
            8 => {
                let Some(conn) = self.pick_conn(&running) else { return };
                self.host.handle_goodbye(conn, DisconnectCode::DUPLICATE, now);
            }
            9 => {
                let i = self.input.pick(4);
                let addr = self.addr(i);
                match self.input.pick(3) {
                    0 => drop(self.host.dial(addr, now)),
                    1 => drop(self.host.add_peer(addr, now)),
                    _ => drop(self.host.dial_peer(self.peers[i], now)),
                }
            }
            10 => {
                let Some(conn) = self.pick_conn(&pending) else { return };
                self.pending.remove(&conn);
                if self.input.pick(2) == 0 {
                    self.host.handle_dial_failed(conn, DialFailure::Unreachable, now);
                } else {
                    self.host.handle_handshake_failed(conn, now);
                }
            }
            11 => {
                let i = self.input.pick(4);
                let peer = self.peers[i];
                match self.input.pick(4) {
                    0 => drop(self.host.ping(peer, now)),
                    1 => self.host.authorize(peer, now),
                    2 => drop(self.host.remove_peer(peer, now)),
                    _ => drop(self.host.disconnect(peer, DisconnectCode::IDLE, String::new())),
                }
            }
            12 => {
                let n = self.input.pick(3);
                let addrs = (0..n).map(|i| self.addr(i).without_peer()).collect();
                self.host.set_advertised(addrs, now);
            }
            _ => {
                let Some(conn) = self.pick_conn(&running) else { return };
                self.host.handle_streams(conn, u32::from(self.input.next().unwrap_or(0) % 3), now);
                self.host.handle_activity(conn, now);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.host.poll_output() {
            match output {
                Output::Transmit(Transmit { conn, lane, frame }) => {
                    let r = self
                        .running
                        .get_mut(&conn)
                        .unwrap_or_else(|| panic!("a frame for {conn}, not running"));
                    match lane {
                        Lane::System => r.system += frame.encoded_len(),
                        Lane::Message => r.protocol += frame.encoded_len(),
                        Lane::Large(_) => {
                            assert!(frame.payload.len() > self.config.control_frame_cap)
                        }
                    }
                }
                Output::Dial { conn, addr, .. } => {
                    let i = self.peers.iter().position(|p| Some(*p) == addr.peer()).unwrap_or(0);
                    assert!(self.pending.insert(conn, Some(i)).is_none(), "{conn} dialled twice");
                }
                Output::Abort { conn } => {
                    assert!(self.pending.remove(&conn).is_some(), "abort of {conn}, not pending");
                }
                Output::Close { conn, .. } | Output::Drain { conn } => {
                    let r = self
                        .running
                        .get_mut(&conn)
                        .unwrap_or_else(|| panic!("close of {conn}, not running"));
                    r.closing = true;
                }
                Output::Activate { conn, .. } | Output::Authorized { conn } => {
                    assert!(self.running.contains_key(&conn), "{conn} not running");
                }
                Output::PingDone { id, .. } => {
                    assert!(self.pings_done.insert(id.0), "ping {} ended twice", id.0);
                }
                Output::Event(HostEvent::PeerConnected { peer, .. }) => {
                    assert!(self.connected.insert(peer), "{peer} connected twice");
                }
                Output::Event(HostEvent::PeerDisconnected { peer, .. }) => {
                    assert!(
                        self.connected.remove(&peer),
                        "{peer} disconnected while not connected"
                    );
                }
                _ => {}
            }
        }
    }

    fn check(&mut self) {
        let system_cap = self.config.system_lane_bytes;
        let credit = self.config.protocol_credit_bytes;
        let max_frame =
            self.config.control_frame_cap + sinew_codec::MAX_HEADER + sinew_codec::CHECKSUM_LEN;
        for (conn, r) in &self.running {
            assert!(r.system <= system_cap, "{conn}: {} system bytes out", r.system);
            assert!(r.protocol <= credit + max_frame, "{conn}: {} protocol bytes out", r.protocol);
        }
        let connected = self.host.connected_peers();
        assert!(connected.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(connected.iter().copied().collect::<BTreeSet<_>>(), self.connected);
        for peer in &self.peers {
            assert_eq!(self.host.is_connected(peer), self.connected.contains(peer));
            assert_eq!(self.host.peer_info(peer).is_some(), self.connected.contains(peer));
        }
        // Closing connections end some time: the driver reports it (not at once, to let
        // frames race the close).
        let closing: Vec<ConnId> =
            self.running.iter().filter(|(_, r)| r.closing).map(|(c, _)| *c).collect();
        if closing.len() > 2 {
            for conn in closing {
                self.running.remove(&conn);
                self.host.handle_closed(conn, Reason::ConnectionLost, self.now);
            }
            self.drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt as _, SeedableRng as _};

    /// Random operation sequences, as the fuzzer would start with.
    #[test]
    fn random_operation_sequences_keep_the_invariants() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..3000 {
            let len = rng.random_range(0..600);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            super::operations(&data);
        }
    }
}
