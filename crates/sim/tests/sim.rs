//! The simulator's promises: hosts connect, identify, ping and exchange requests; many hosts
//! deliver every message exactly once and in order; the simultaneous-dial race ends with one
//! connection on both sides; the same seed gives the same log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt as _, SeedableRng as _};
use sinew_codec::Opcode;
use sinew_protocol::{Ctx, Handled, Message, Opcodes, PeerInfo, Protocol, Response, TimerId};
use sinew_sim::{HostIdx, Sim};
use sinew_types::PeerId;

fn op() -> Opcode {
    Opcode::app(1000).unwrap()
}

/// What a [`Chatter`] saw: messages by sender, in arrival order, and responses.
#[derive(Default, Debug)]
struct Seen {
    messages: Vec<(PeerId, u32)>,
    responses: Vec<(PeerId, Vec<u8>)>,
    /// How many messages this host sent each peer.
    sent: std::collections::BTreeMap<PeerId, u32>,
}

/// What a test reads of a [`Chatter`] inside a host.
type Shared = Arc<Mutex<Seen>>;

/// Sends `burst` numbered messages to each peer as it connects, then one more to each
/// connected peer every `at`, `later` times; answers requests with their payload reversed.
struct Chatter {
    burst: u32,
    later: u32,
    start: Duration,
    at: Duration,
    seen: Arc<Mutex<Seen>>,
    request_at_start: bool,
}

impl Chatter {
    fn new(burst: u32, later: u32, start: Duration, at: Duration) -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let chatter = Self { burst, later, start, at, seen: seen.clone(), request_at_start: false };
        (chatter, seen)
    }

    fn send(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, n: u32) {
        let mut seen = self.seen.lock().unwrap();
        for _ in 0..n {
            let seq = seen.sent.entry(peer).or_insert(0);
            ctx.try_send(&peer, op(), Bytes::copy_from_slice(&seq.to_le_bytes())).unwrap();
            *seq += 1;
        }
    }
}

impl Protocol for Chatter {
    fn opcodes(&self) -> Opcodes {
        op().into()
    }
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        if self.later > 0 {
            ctx.set_timer_in(self.start);
        }
    }
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        self.send(ctx, peer.peer, self.burst);
        if self.request_at_start {
            ctx.request(&peer.peer, op(), Bytes::from_static(b"abc"), Duration::from_secs(5))
                .unwrap();
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _timer: TimerId) {
        for peer in ctx.peers().to_vec() {
            self.send(ctx, peer, 1);
        }
        self.later -= 1;
        if self.later > 0 {
            ctx.set_timer_in(self.at);
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        if msg.request_id().is_some() {
            let reversed: Vec<u8> = msg.payload.iter().rev().copied().collect();
            ctx.reply(&msg, Bytes::from(reversed)).unwrap();
        } else {
            let seq = u32::from_le_bytes(msg.payload[..4].try_into().unwrap());
            self.seen.lock().unwrap().messages.push((msg.peer, seq));
        }
        Handled::Yes
    }
    fn on_response(&mut self, _ctx: &mut Ctx<'_>, response: Response) {
        let payload = response.result.map(|b| b.to_vec()).unwrap_or_default();
        self.seen.lock().unwrap().responses.push((response.peer, payload));
    }
}

/// Asserts that `seen` holds exactly `0..n` from each of `senders`, in order per sender.
fn assert_in_order_once(seen: &Seen, senders: &[PeerId], n: u32, who: &str) {
    for sender in senders {
        let got: Vec<u32> =
            seen.messages.iter().filter(|(p, _)| p == sender).map(|(_, s)| *s).collect();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "{who}: messages from {sender}");
    }
    let total: usize = senders.len() * n as usize;
    assert_eq!(seen.messages.len(), total, "{who}: nothing from anyone else");
}

#[test]
fn two_hosts_connect_identify_ping_and_exchange_requests() {
    let mut sim = Sim::new(7);
    let (mut chatter, seen) = Chatter::new(0, 0, Duration::ZERO, Duration::ZERO);
    chatter.request_at_start = true;
    let a = sim.add_host_with(vec![Box::new(chatter)]);
    let (chatter, _) = Chatter::new(0, 0, Duration::ZERO, Duration::ZERO);
    let b = sim.add_host_with(vec![Box::new(chatter)]);
    sim.dial(a, b);
    sim.run_for(Duration::from_millis(100));
    let (pa, pb) = (sim.peer_id(a), sim.peer_id(b));
    assert_eq!(sim.host(a).connected_peers(), &[pb]);
    assert_eq!(sim.host(b).connected_peers(), &[pa]);
    let identity = sim.host(a).peer_info(&pb).and_then(|i| i.identity.clone()).expect("identified");
    assert_eq!(identity.listen_addrs, vec![sim.addr(b).without_peer()]);
    assert!(identity.opcodes.iter().any(|r| r.contains(op())), "b announces its opcodes");
    assert_eq!(seen.lock().unwrap().responses, vec![(pb, b"cba".to_vec())]);
    let now = sim.instant();
    let ping = sim.host_mut(a).ping(pb, now).unwrap();
    sim.settle();
    sim.run_for(Duration::from_millis(100));
    // 5 ms each way.
    let line = format!("h{a} ping {} Ok(10000)", ping.0);
    assert!(sim.log().iter().any(|l| l.ends_with(&line)), "{:#?}", sim.log());
    assert!(!sim.log().iter().any(|l| l.contains("disconnected")));
}

/// Builds a ring of `n` hosts with `chords` random extra links, each host sending `m`
/// messages to each neighbour; returns the sim, each host's view and its neighbours.
fn ring(seed: u64, n: usize, chords: usize, m: u32) -> (Sim, Vec<Shared>, Vec<Vec<HostIdx>>) {
    let mut sim = Sim::new(seed);
    sim.set_logging(false);
    sim.set_latency(Duration::from_millis(1), Duration::from_millis(40));
    let mut seen = Vec::new();
    for _ in 0..n {
        let (chatter, s) = Chatter::new(0, m, Duration::from_secs(1), Duration::from_millis(100));
        sim.add_host_with(vec![Box::new(chatter)]);
        seen.push(s);
    }
    let mut neighbours = vec![Vec::new(); n];
    let link = |sim: &mut Sim, a: usize, b: usize, neighbours: &mut Vec<Vec<usize>>| {
        if a == b || neighbours[a].contains(&b) {
            return;
        }
        neighbours[a].push(b);
        neighbours[b].push(a);
        sim.dial(a, b);
    };
    for i in 0..n {
        link(&mut sim, i, (i + 1) % n, &mut neighbours);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..chords {
        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
        link(&mut sim, a, b, &mut neighbours);
    }
    sim.run_for(Duration::from_secs(5));
    (sim, seen, neighbours)
}

#[test]
fn a_hundred_hosts_on_a_ring_with_chords_deliver_every_message_once_in_order() {
    let (sim, seen, neighbours) = ring(11, 100, 50, 10);
    for (idx, seen) in seen.iter().enumerate() {
        let senders: Vec<PeerId> = neighbours[idx].iter().map(|n| sim.peer_id(*n)).collect();
        assert_eq!(sim.host(idx).connected_peers().len(), senders.len(), "h{idx} neighbours");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.sent.values().copied().collect::<Vec<_>>(), vec![10; senders.len()]);
        assert_in_order_once(&seen, &senders, 10, &format!("h{idx}"));
    }
}

#[test]
fn the_same_seed_gives_the_same_log_byte_for_byte() {
    let run = |seed| {
        let mut sim = Sim::new(seed);
        sim.set_latency(Duration::from_millis(1), Duration::from_millis(30));
        let hosts: Vec<_> = (0..6).map(|_| sim.add_host()).collect();
        for (i, a) in hosts.iter().enumerate() {
            sim.dial(*a, hosts[(i + 1) % hosts.len()]);
            sim.dial(*a, hosts[(i + 3) % hosts.len()]);
        }
        sim.run_for(Duration::from_secs(60));
        sim.log().join("\n")
    };
    let first = run(5);
    assert!(first.lines().count() > 30, "a log worth comparing:\n{first}");
    assert_eq!(first, run(5));
    assert_ne!(first, run(6), "another seed, other keys");
}

/// Both hosts dial each other at nearly the same time, on links of random latency, while
/// each sends numbered messages as soon as the other connects.
#[test]
fn the_simultaneous_dial_race_over_a_thousand_seeds() {
    for seed in 0..1000u64 {
        let mut sim = Sim::new(seed);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let (lo, hi) = (rng.random_range(1..20), rng.random_range(20..60));
        sim.set_latency(Duration::from_millis(lo), Duration::from_millis(hi));
        // One message every millisecond from the first connection on, across the swap.
        let (ca, seen_a) =
            Chatter::new(20, 200, Duration::from_millis(1), Duration::from_millis(1));
        let (cb, seen_b) =
            Chatter::new(20, 200, Duration::from_millis(1), Duration::from_millis(1));
        let a = sim.add_host_with(vec![Box::new(ca)]);
        let b = sim.add_host_with(vec![Box::new(cb)]);
        sim.dial(a, b);
        sim.run_for(Duration::from_micros(rng.random_range(0..lo * 1000)));
        sim.dial(b, a);
        sim.run_for(Duration::from_secs(10));
        let (pa, pb) = (sim.peer_id(a), sim.peer_id(b));
        let conns = |idx: HostIdx| sim.host(idx).manager().counts().total;
        assert_eq!((conns(a), conns(b)), (1, 1), "seed {seed}: one connection each");
        assert_eq!(sim.host(a).connected_peers(), &[pb], "seed {seed}");
        assert_eq!(sim.host(b).connected_peers(), &[pa], "seed {seed}");
        assert!(
            sim.same_link(a, b),
            "seed {seed}: both sides kept the same connection\n{:#?}",
            sim.log()
        );
        assert!(
            !sim.log().iter().any(|l| l.contains("disconnected")),
            "seed {seed}: no PeerDisconnected\n{:#?}",
            sim.log()
        );
        let (seen_a, seen_b) = (seen_a.lock().unwrap(), seen_b.lock().unwrap());
        let (to_b, to_a) = (seen_a.sent[&pb], seen_b.sent[&pa]);
        assert!(to_a > 100 && to_b > 100, "seed {seed}: a stream across the race");
        assert_in_order_once(&seen_a, &[pb], to_a, &format!("seed {seed}: a"));
        assert_in_order_once(&seen_b, &[pa], to_b, &format!("seed {seed}: b"));
    }
}

/// Dials an address when it starts, and keeps how the dial ended and the unix time then.
struct Dialler(sinew_types::Addr, Arc<Mutex<Vec<(sinew_protocol::DialOutcome, Duration)>>>);
impl Protocol for Dialler {
    fn opcodes(&self) -> Opcodes {
        Opcodes::none()
    }
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.dial(self.0.clone());
    }
    fn on_dial_outcome(&mut self, ctx: &mut Ctx<'_>, outcome: &sinew_protocol::DialOutcome) {
        self.1.lock().unwrap().push((outcome.clone(), ctx.unix_time()));
    }
}

#[test]
fn a_protocol_learns_how_its_dials_ended() {
    let mut sim = Sim::new(3);
    let target = sim.add_host();
    let nowhere: sinew_types::Addr = "tcp://192.0.2.99:4001".parse().unwrap();
    let (good, bad) = (Arc::default(), Arc::default());
    sim.add_host_with(vec![Box::new(Dialler(sim.addr(target), Arc::clone(&good)))]);
    sim.add_host_with(vec![Box::new(Dialler(nowhere.clone(), Arc::clone(&bad)))]);
    sim.run_for(Duration::from_secs(1));
    let good = good.lock().unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].0.result, Ok(sim.peer_id(target)));
    // The unix time advances with the virtual clock (10 ms: a round trip of 5 ms links).
    assert_eq!(good[0].1, sim.unix_epoch() + Duration::from_millis(10));
    let bad = bad.lock().unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0.result, Err(sinew_protocol::DialFailure::Unreachable));
    assert_eq!(bad[0].0.addr, nowhere);
}
