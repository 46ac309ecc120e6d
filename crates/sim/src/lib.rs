//! The simulator: N real [`Host`]s in one thread, on a virtual clock, over an in-memory
//! network.
//!
//! - **Links.** A dial reaches the host listening at its address after the link's one-way
//!   latency; both handshakes finish one round trip after the dial. Each connection delivers
//!   its frames in order (FIFO per direction), each after the latency. A close reaches the
//!   other end after what was sent before it, as a goodbye.
//! - **Writers.** The simulated writer takes whatever the host hands it at once (the credit
//!   comes back at once). Like the node's, the message lane of a peer's next connection waits
//!   until its previous connection ended (the lane lease), so each sender's messages arrive in
//!   order across a duplicate swap.
//! - **Determinism.** Keys, boot nonces, session tags and every host's RNG come from the
//!   seed, and events run in (time, sequence) order: the same seed gives the same event log,
//!   byte for byte ([`Sim::log`]).
//!
//! ```
//! use std::time::Duration;
//! use sinew_sim::Sim;
//!
//! let mut sim = Sim::new(1);
//! let (a, b) = (sim.add_host(), sim.add_host());
//! sim.dial(a, b);
//! sim.run_for(Duration::from_secs(1));
//! assert!(sim.host(a).is_connected(&sim.peer_id(b)));
//! ```
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng as _, RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use sinew_codec::Frame;
use sinew_codec::messages::DisconnectCode;
use sinew_host::{Host, HostConfig, HostEvent, Lane, Output, Transmit};
use sinew_peers::{ConnId, DialFailure, Established, PeerManager, PeersConfig};
use sinew_protocol::{Protocol, Reason};
use sinew_types::{Addr, Direction, Keypair, PeerId};

/// A host's index in its simulation.
pub type HostIdx = usize;

/// One end of a connection: (host, its connection id).
type End = (HostIdx, ConnId);

/// What happens at a virtual instant.
#[derive(Debug)]
enum Ev {
    /// A dial reaches the listener.
    Arrive { link: usize },
    /// Both handshakes finish.
    Handshake { link: usize },
    /// A frame reaches `to`.
    Frame { to: End, frame: Frame },
    /// A goodbye reaches `to`; then its connection ends.
    Goodbye { to: End, code: DisconnectCode, message: String },
    /// The closing side's connection ends.
    Closed { at: End, reason: Reason },
    /// A dial fails.
    DialFailed { at: End, failure: DialFailure },
}

/// A link between two hosts.
#[derive(Debug)]
struct Link {
    dialler: End,
    /// The listener's end, once the dial arrived.
    listener: Option<End>,
    target: HostIdx,
    latency: Duration,
    /// When the last frame in each direction (from the dialler, from the listener) arrives.
    last: [Duration; 2],
    /// Whether each end has closed (its frames stop).
    closed: [bool; 2],
    aborted: bool,
}

/// A simulated host.
struct SimHost {
    host: Host,
    keypair_peer: PeerId,
    addr: Addr,
    ip: Ipv4Addr,
    /// Connection -> link, for established and pending connections.
    links: BTreeMap<ConnId, usize>,
    /// The connection whose message lane a peer's frames use (the lane lease), and frames
    /// for a peer's later connections waiting for it to end.
    lease: BTreeMap<PeerId, ConnId>,
    held: BTreeMap<ConnId, VecDeque<Frame>>,
}

/// A simulation. See the crate docs.
pub struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    base: Instant,
    now: Duration,
    seq: u64,
    events: BTreeMap<(Duration, u64), Ev>,
    hosts: Vec<SimHost>,
    by_addr: BTreeMap<Addr, HostIdx>,
    links: Vec<Link>,
    next_port: u16,
    /// Latency for new links: each link draws uniformly from this range.
    latency: (Duration, Duration),
    log: Option<Vec<String>>,
    /// Each host's next deadline, and them all in order.
    deadline_of: Vec<Option<Duration>>,
    deadlines: std::collections::BTreeSet<(Duration, HostIdx)>,
    peers_config: PeersConfig,
    host_config: Box<dyn Fn(HostConfig) -> HostConfig>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty simulation; everything random in it comes from `seed`.
    #[allow(clippy::disallowed_methods)] // the virtual clock's origin; only offsets are used
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            events: BTreeMap::new(),
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            links: Vec::new(),
            next_port: 10_000,
            latency: (Duration::from_millis(5), Duration::from_millis(5)),
            log: Some(Vec::new()),
            deadline_of: Vec::new(),
            deadlines: std::collections::BTreeSet::new(),
            peers_config: PeersConfig::default(),
            host_config: Box::new(|c| c),
        }
    }

    /// Each new link's one-way latency is drawn uniformly from `min..=max`.
    pub fn set_latency(&mut self, min: Duration, max: Duration) {
        self.latency = (min, max.max(min));
    }

    /// Whether to keep the event log (on by default; off for large runs).
    pub fn set_logging(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// The peer manager settings of hosts added from now on.
    pub fn set_peers_config(&mut self, config: PeersConfig) {
        self.peers_config = config;
    }

    /// Adjusts the host settings of hosts added from now on.
    pub fn set_host_config(&mut self, f: impl Fn(HostConfig) -> HostConfig + 'static) {
        self.host_config = Box::new(f);
    }

    /// Adds a started host with the given extra protocols.
    pub fn add_host_with(&mut self, protocols: Vec<Box<dyn Protocol>>) -> HostIdx {
        let idx = self.hosts.len();
        let keypair = Keypair::generate_with(&mut ChaCha8Rng::seed_from_u64(self.rng.next_u64()));
        let peer = keypair.peer_id();
        let mut config = HostConfig::new(peer);
        config.boot_nonce = self.rng.next_u64();
        let config = (self.host_config)(config);
        let manager = PeerManager::new(peer, self.peers_config.clone(), self.rng.next_u64())
            .unwrap_or_else(|e| panic!("peer manager settings: {e}"));
        let now = self.instant();
        let rng = ChaCha8Rng::seed_from_u64(self.rng.next_u64());
        let mut host = Host::new(config, manager, rng, now);
        host.set_time(now, Some(self.unix_epoch() + self.now));
        for protocol in protocols {
            host.register(protocol).unwrap_or_else(|e| panic!("register: {e}"));
        }
        let n = u32::try_from(idx).unwrap_or(u32::MAX) + 1;
        let ip = Ipv4Addr::from(0x0a00_0000 | n);
        let addr = Addr::tcp(SocketAddr::new(IpAddr::V4(ip), 4001));
        host.set_advertised(vec![addr.clone()], now);
        host.start(now);
        self.by_addr.insert(addr.clone(), idx);
        self.hosts.push(SimHost {
            host,
            keypair_peer: peer,
            addr,
            ip,
            links: BTreeMap::new(),
            lease: BTreeMap::new(),
            held: BTreeMap::new(),
        });
        self.deadline_of.push(None);
        self.drain(idx);
        idx
    }

    /// Adds a started host with the built-in protocols only.
    pub fn add_host(&mut self) -> HostIdx {
        self.add_host_with(Vec::new())
    }

    /// The unix time at the simulation's start (every host's clock agrees): 2026-01-01.
    pub fn unix_epoch(&self) -> Duration {
        Duration::from_secs(1_767_225_600)
    }

    /// The virtual time now, as an instant.
    pub fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// A host.
    pub fn host(&self, idx: HostIdx) -> &Host {
        &self.hosts[idx].host
    }

    /// A host, to call its application commands (then call [`Sim::settle`]).
    pub fn host_mut(&mut self, idx: HostIdx) -> &mut Host {
        &mut self.hosts[idx].host
    }

    /// A host's peer id.
    pub fn peer_id(&self, idx: HostIdx) -> PeerId {
        self.hosts[idx].keypair_peer
    }

    /// A host's listen address (with its peer id).
    pub fn addr(&self, idx: HostIdx) -> Addr {
        self.hosts[idx].addr.clone().with_peer(self.hosts[idx].keypair_peer)
    }

    /// The event log so far (empty when logging is off).
    pub fn log(&self) -> &[String] {
        self.log.as_deref().unwrap_or_default()
    }

    /// Hosts in the simulation.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether `a`'s active connection to `b` and `b`'s to `a` are the two ends of one link.
    pub fn same_link(&self, a: HostIdx, b: HostIdx) -> bool {
        let active = |x: HostIdx, y: HostIdx| {
            let conn = self.hosts[x].host.manager().active_connection(&self.peer_id(y))?;
            self.hosts[x].links.get(&conn).copied()
        };
        matches!((active(a, b), active(b, a)), (Some(l1), Some(l2)) if l1 == l2)
    }

    /// Has host `from` dial host `to` now.
    pub fn dial(&mut self, from: HostIdx, to: HostIdx) {
        let addr = self.addr(to);
        let now = self.instant();
        let _ = self.hosts[from].host.dial(addr, now);
        self.drain(from);
    }

    /// Applies what hosts asked for after their application commands.
    pub fn settle(&mut self) {
        for idx in 0..self.hosts.len() {
            self.drain(idx);
        }
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert((self.now + after, self.seq), ev);
    }

    fn record(&mut self, idx: HostIdx, what: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            log.push(format!("{:>10.6} h{idx} {}", self.now.as_secs_f64(), what()));
        }
    }

    /// Runs the simulation for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let next_event = self.events.keys().next().map(|(at, _)| *at);
            let next_timer = self.next_timer();
            let next = [next_event, next_timer.map(|(at, _)| at)].into_iter().flatten().min();
            let Some(at) = next.filter(|at| *at <= end) else { break };
            self.now = self.now.max(at);
            if next_event == Some(at) {
                if let Some((_, ev)) = self.events.pop_first() {
                    self.apply(ev);
                }
            } else if let Some((_, idx)) = next_timer {
                let now = self.instant();
                self.hosts[idx].host.handle_timeout(now);
                self.drain(idx);
            }
        }
        self.now = end;
    }

    /// The earliest host deadline, as an offset, and its host.
    fn next_timer(&self) -> Option<(Duration, HostIdx)> {
        self.deadlines.first().copied()
    }

    /// Files host `idx`'s next deadline (after anything that may have changed it).
    fn refresh_deadline(&mut self, idx: HostIdx) {
        let at =
            self.hosts[idx].host.poll_timeout().map(|at| at.saturating_duration_since(self.base));
        if self.deadline_of[idx] != at {
            if let Some(old) = self.deadline_of[idx] {
                self.deadlines.remove(&(old, idx));
            }
            if let Some(at) = at {
                self.deadlines.insert((at, idx));
            }
            self.deadline_of[idx] = at;
        }
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.instant();
        match ev {
            Ev::Arrive { link } => {
                let target = self.links[link].target;
                if self.links[link].aborted {
                    return;
                }
                let (from, _) = self.links[link].dialler;
                let remote = SocketAddr::new(IpAddr::V4(self.hosts[from].ip), self.next_port);
                self.next_port = self.next_port.wrapping_add(1).max(10_000);
                match self.hosts[target].host.handle_inbound(remote, now) {
                    Ok(conn) => {
                        self.links[link].listener = Some((target, conn));
                        self.hosts[target].links.insert(conn, link);
                        let latency = self.links[link].latency;
                        self.schedule(latency, Ev::Handshake { link });
                    }
                    Err(_) => {
                        let latency = self.links[link].latency;
                        let at = self.links[link].dialler;
                        self.schedule(
                            latency,
                            Ev::DialFailed { at, failure: DialFailure::Refused },
                        );
                    }
                }
                self.drain(target);
            }
            Ev::Handshake { link } => self.handshake(link),
            Ev::Frame { to: (idx, conn), frame } => {
                if self.hosts[idx].links.contains_key(&conn) {
                    self.hosts[idx].host.handle_frame(conn, frame, now);
                    self.drain(idx);
                }
            }
            Ev::Goodbye { to: (idx, conn), code, message } => {
                if self.hosts[idx].links.contains_key(&conn) {
                    self.hosts[idx].host.handle_goodbye(conn, code, now);
                    self.end(idx, conn, Reason::Remote { code, message });
                }
            }
            Ev::Closed { at: (idx, conn), reason } => self.end(idx, conn, reason),
            Ev::DialFailed { at: (idx, conn), failure } => {
                self.hosts[idx].links.remove(&conn);
                self.hosts[idx].host.handle_dial_failed(conn, failure, now);
                self.drain(idx);
            }
        }
    }

    fn handshake(&mut self, link: usize) {
        let now = self.instant();
        let Some(listener) = self.links[link].listener else { return };
        let dialler = self.links[link].dialler;
        let tag: [u8; 32] = self.rng.random();
        let ends =
            [(listener, dialler, Direction::Inbound), (dialler, listener, Direction::Outbound)];
        if self.links[link].aborted {
            self.hosts[listener.0].links.remove(&listener.1);
            self.hosts[listener.0].host.handle_handshake_failed(listener.1, now);
            self.drain(listener.0);
            return;
        }
        for ((idx, conn), (other, other_conn), direction) in ends {
            let remote_addr = match direction {
                Direction::Outbound => self.hosts[other].addr.clone(),
                Direction::Inbound => {
                    Addr::tcp(SocketAddr::new(IpAddr::V4(self.hosts[other].ip), 40_000))
                }
            };
            let established = Established {
                peer: self.hosts[other].keypair_peer,
                direction,
                remote_addr,
                boot_nonce: self.hosts[other].host.config().boot_nonce,
                session_tag: tag,
            };
            if self.hosts[idx].host.handle_established(conn, established, now) {
                self.record(idx, || format!("established {conn} with h{other} ({direction:?})"));
            } else {
                // Given up meanwhile: the other end sees the connection close.
                self.hosts[idx].links.remove(&conn);
                let reason = Reason::ConnectionLost;
                let latency = self.links[link].latency;
                self.schedule(latency, Ev::Closed { at: (other, other_conn), reason });
            }
            self.drain(idx);
        }
    }

    /// A connection ended at `idx`: the host hears of it, and its peer's next connection may
    /// write its message lane.
    fn end(&mut self, idx: HostIdx, conn: ConnId, reason: Reason) {
        let Some(link) = self.hosts[idx].links.remove(&conn) else { return };
        let side = usize::from(self.links[link].dialler != (idx, conn));
        self.links[link].closed[side] = true;
        let now = self.instant();
        self.hosts[idx].host.handle_closed(conn, reason, now);
        let released: Vec<PeerId> =
            self.hosts[idx].lease.iter().filter(|(_, c)| **c == conn).map(|(p, _)| *p).collect();
        for peer in released {
            let host = &mut self.hosts[idx];
            host.lease.remove(&peer);
            // The peer's active connection takes the lease, with the frames it held.
            let Some(next) = host.host.manager().active_connection(&peer) else { continue };
            if !host.links.contains_key(&next) {
                continue;
            }
            host.lease.insert(peer, next);
            let frames = host.held.remove(&next).unwrap_or_default();
            for frame in frames {
                self.send(idx, next, frame);
            }
        }
        self.hosts[idx].held.remove(&conn);
        self.drain(idx);
    }

    /// Applies host `idx`'s outputs.
    fn drain(&mut self, idx: HostIdx) {
        while let Some(output) = self.hosts[idx].host.poll_output() {
            self.output(idx, output);
        }
        self.refresh_deadline(idx);
    }

    fn output(&mut self, idx: HostIdx, output: Output) {
        match output {
            Output::Transmit(Transmit { conn, lane, frame }) => {
                let len = frame.encoded_len();
                match lane {
                    Lane::Message | Lane::Large(_) => self.message_lane(idx, conn, frame),
                    Lane::System => self.send(idx, conn, frame),
                }
                self.hosts[idx].host.handle_write_credit(conn, lane, len);
            }
            Output::Dial { conn, addr, alternatives: _ } => {
                let (min, max) = self.latency;
                let latency = if max > min { self.rng.random_range(min..=max) } else { min };
                let target = self.by_addr.get(&addr.clone().without_peer()).copied();
                let link = self.links.len();
                self.links.push(Link {
                    dialler: (idx, conn),
                    listener: None,
                    target: target.unwrap_or(usize::MAX),
                    latency,
                    last: [Duration::ZERO; 2],
                    closed: [false; 2],
                    aborted: false,
                });
                self.hosts[idx].links.insert(conn, link);
                match target {
                    Some(t) if addr.peer().is_none_or(|p| p == self.hosts[t].keypair_peer) => {
                        self.schedule(latency, Ev::Arrive { link })
                    }
                    Some(_) => self.schedule(
                        latency * 2,
                        Ev::DialFailed { at: (idx, conn), failure: DialFailure::UnexpectedPeer },
                    ),
                    None => self.schedule(
                        latency,
                        Ev::DialFailed { at: (idx, conn), failure: DialFailure::Unreachable },
                    ),
                }
            }
            Output::Abort { conn } => {
                if let Some(link) = self.hosts[idx].links.remove(&conn) {
                    self.links[link].aborted = true;
                }
            }
            Output::Close { conn, code, message, .. } => {
                self.record(idx, || format!("close {conn}: {code:?} {message}"));
                self.close(idx, conn, code, message)
            }
            Output::Drain { conn } => {
                self.record(idx, || format!("drain {conn}"));
                self.close(idx, conn, DisconnectCode::DUPLICATE, String::new())
            }
            Output::Activate { peer, conn } => {
                let host = &mut self.hosts[idx];
                host.lease.entry(peer).or_insert(conn);
            }
            Output::Event(event) => {
                let line = describe(&event);
                self.record(idx, || line);
            }
            Output::DialFailed { conn, addr } => {
                self.record(idx, || format!("dial {conn} to {addr} failed"))
            }
            Output::PingDone { id, result } => self
                .record(idx, || format!("ping {} {:?}", id.0, result.map(|rtt| rtt.as_micros()))),
            Output::PeerGone { .. }
            | Output::Notice { .. }
            | Output::CancelTransfer { .. }
            | Output::ProtocolGone { .. }
            | Output::Authorized { .. }
            | Output::DialSucceeded { .. }
            | Output::Response { .. } => {}
        }
    }

    /// A frame for a connection's message lane: it waits while another connection of the
    /// same peer holds the lane lease.
    fn message_lane(&mut self, idx: HostIdx, conn: ConnId, frame: Frame) {
        let host = &mut self.hosts[idx];
        let Some(peer) = host.host.conn_peer(conn) else { return };
        let holder = *host.lease.entry(peer).or_insert(conn);
        if holder == conn {
            self.send(idx, conn, frame);
        } else {
            host.held.entry(conn).or_default().push_back(frame);
        }
    }

    /// Puts a frame on the wire of `conn`: it arrives after the link's latency, after every
    /// frame sent before it in that direction.
    fn send(&mut self, idx: HostIdx, conn: ConnId, frame: Frame) {
        let Some(&link) = self.hosts[idx].links.get(&conn) else { return };
        let l = &self.links[link];
        let side = usize::from(l.dialler != (idx, conn));
        let (Some(listener), false) = (l.listener, l.closed[side]) else { return };
        let to = if side == 0 { listener } else { l.dialler };
        let at = (self.now + l.latency).max(l.last[side]);
        self.links[link].last[side] = at;
        self.seq += 1;
        self.events.insert((at, self.seq), Ev::Frame { to, frame });
    }

    fn close(&mut self, idx: HostIdx, conn: ConnId, code: DisconnectCode, message: String) {
        let Some(&link) = self.hosts[idx].links.get(&conn) else { return };
        let l = &self.links[link];
        let side = usize::from(l.dialler != (idx, conn));
        if l.closed[side] {
            return;
        }
        let Some(listener) = l.listener else { return };
        let to = if side == 0 { listener } else { l.dialler };
        let at = (self.now + l.latency).max(l.last[side]);
        self.links[link].last[side] = at;
        self.links[link].closed[side] = true;
        self.seq += 1;
        self.events.insert((at, self.seq), Ev::Goodbye { to, code, message });
        self.seq += 1;
        self.events
            .insert((at, self.seq), Ev::Closed { at: (idx, conn), reason: Reason::Local(code) });
    }
}

/// An event as the log writes it.
fn describe(event: &HostEvent) -> String {
    match event {
        HostEvent::PeerConnected { peer, direction, .. } => {
            format!("connected {peer} {direction:?}")
        }
        HostEvent::PeerIdentified { peer, .. } => format!("identified {peer}"),
        HostEvent::PeerDisconnected { peer, reason } => format!("disconnected {peer}: {reason}"),
        HostEvent::InboundRefused { remote, refusal } => format!("refused {remote}: {refusal}"),
        HostEvent::RemoteError { peer, opcode, status } => {
            format!("remote error from {peer} on {opcode}: {status:?}")
        }
        HostEvent::ProtocolPanicked { protocol, message } => {
            format!("{protocol} panicked: {message}")
        }
        HostEvent::Protocol(event) => format!("event from {}", event.protocol),
        HostEvent::AddressesChanged { addrs } => format!("addresses {}", addrs.len()),
    }
}
