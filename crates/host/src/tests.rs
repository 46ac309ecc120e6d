//! The host on virtual time: one connection driven by hand, outputs checked in order.

#![allow(clippy::disallowed_methods)] // a real instant as the virtual clock's origin

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng as _;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_peers::{ConnId, Established, PeerManager, PeersConfig};
use sinew_protocol::{Ctx, Handled, Message, Opcodes, PeerInfo, Protocol, Response, SendError};
use sinew_types::{Direction, Keypair, PeerId};

use crate::{Host, HostConfig, HostEvent, Lane, Output, PingFailure, Transmit};

fn key(seed: u64) -> PeerId {
    Keypair::generate_with(&mut ChaCha8Rng::seed_from_u64(seed)).peer_id()
}

fn app(n: u32) -> Opcode {
    Opcode::app(n).unwrap()
}

/// A host with one connection to `remote`, its start-up outputs drained.
struct Harness {
    host: Host,
    now: Instant,
    conn: ConnId,
    remote: PeerId,
}

impl Harness {
    fn new(
        config: impl FnOnce(&mut HostConfig, &mut PeersConfig),
        protocols: Vec<Box<dyn Protocol>>,
    ) -> Self {
        let now = Instant::now();
        let local = key(1);
        let mut host_config = HostConfig::new(local);
        let mut peers_config = PeersConfig::default();
        config(&mut host_config, &mut peers_config);
        let peers = PeerManager::new(local, peers_config, 3).unwrap();
        let mut host = Host::new(host_config, peers, ChaCha8Rng::seed_from_u64(4), now);
        for p in protocols {
            host.register(p).unwrap();
        }
        host.start(now);
        let remote = key(2);
        let conn = host.handle_inbound("192.0.2.7:5000".parse().unwrap(), now).unwrap();
        let established = Established {
            peer: remote,
            direction: Direction::Inbound,
            remote_addr: "tcp://192.0.2.7:5000".parse().unwrap(),
            boot_nonce: 9,
            session_tag: [1; 32],
        };
        assert!(host.handle_established(conn, established, now));
        let mut harness = Self { host, now, conn, remote };
        let start = harness.outputs();
        // Whatever went out at connect time (identify) was written.
        for output in &start {
            if let Output::Transmit(Transmit { lane: Lane::System, frame, .. }) = output {
                harness.host.handle_write_credit(conn, Lane::System, frame.encoded_len());
            }
        }
        assert!(start.iter().any(|o| matches!(o, Output::Activate { conn: c, .. } if *c == conn)));
        assert!(start.iter().any(|o| matches!(o, Output::Event(HostEvent::PeerConnected { .. }))));
        harness
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.host.poll_output()).collect()
    }

    /// The frames written on `lane`, in order.
    fn written(&mut self, lane: Lane) -> Vec<Frame> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit(Transmit { lane: l, frame, .. }) if l == lane => Some(frame),
                _ => None,
            })
            .collect()
    }

    fn frame(&mut self, frame: Frame) {
        self.host.handle_frame(self.conn, frame, self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.host.handle_timeout(self.now);
    }
}

/// Answers requests on 1000 with their payload; acked messages are handled; 1001 is not.
struct Echo;
impl Protocol for Echo {
    fn opcodes(&self) -> Opcodes {
        Opcodes::ranges([sinew_codec::OpcodeRange::new(app(1000), app(1001)).unwrap()])
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        if msg.opcode == app(1001) {
            return Handled::No;
        }
        let _ = ctx.reply(&msg, msg.payload.clone());
        Handled::Yes
    }
}

#[test]
fn acks_replies_and_unknown_opcodes_are_answered_on_their_lanes() {
    let mut h = Harness::new(|_, _| {}, vec![Box::new(Echo)]);
    let kinds =
        |frames: Vec<Frame>| frames.into_iter().map(|f| (f.opcode, f.kind)).collect::<Vec<_>>();
    h.frame(Frame::new(app(1000), FrameKind::Acked { id: 5 }, Bytes::new()));
    assert_eq!(kinds(h.written(Lane::System)), vec![(Opcode::ACK, FrameKind::Response { id: 5 })]);
    // A response to an application request is an application frame: the message lane.
    h.frame(Frame::new(app(1000), FrameKind::Request { id: 6 }, Bytes::from_static(b"x")));
    let out = h.outputs();
    assert_eq!(out.len(), 1, "{out:?}");
    let Output::Transmit(Transmit { lane: Lane::Message, frame, .. }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((frame.kind, &frame.payload[..]), (FrameKind::Response { id: 6 }, &b"x"[..]));
    h.frame(Frame::new(app(1001), FrameKind::Request { id: 7 }, Bytes::new()));
    h.frame(Frame::new(app(2000), FrameKind::Message, Bytes::new()));
    // An error is never answered (no loops).
    h.frame(Frame::new(app(2000), FrameKind::Error { id: 3, status: Status::BUSY }, Bytes::new()));
    assert_eq!(
        kinds(h.written(Lane::System)),
        vec![
            (app(1001), FrameKind::Error { id: 7, status: Status::UNKNOWN_OPCODE }),
            (app(2000), FrameKind::Error { id: 0, status: Status::UNKNOWN_OPCODE }),
        ]
    );
}

#[test]
fn an_unauthorized_peer_may_only_use_the_open_opcodes() {
    let mut h = Harness::new(|_, peers| peers.default_authorized = false, vec![Box::new(Echo)]);
    h.frame(Frame::new(app(1000), FrameKind::Request { id: 1 }, Bytes::new()));
    let errors: Vec<_> = h.written(Lane::System).into_iter().map(|f| f.kind).collect();
    assert_eq!(errors, vec![FrameKind::Error { id: 1, status: Status::UNAUTHORIZED }]);
    // Pings are open to everyone.
    h.frame(Frame::new(
        Opcode::PING,
        FrameKind::Request { id: 2 },
        Bytes::from_static(b"12345678"),
    ));
    let pongs: Vec<_> = h.written(Lane::System).into_iter().map(|f| (f.opcode, f.kind)).collect();
    assert_eq!(pongs, vec![(Opcode::PONG, FrameKind::Response { id: 2 })]);
    let now = h.now;
    h.host.authorize(h.remote, now);
    assert!(
        h.outputs().iter().any(|o| matches!(o, Output::Authorized { conn } if *conn == h.conn))
    );
    h.frame(Frame::new(app(1000), FrameKind::Request { id: 3 }, Bytes::new()));
    assert_eq!(h.written(Lane::Message).len(), 1, "answered once authorized");
}

#[test]
fn answers_the_remote_does_not_read_overflow_the_system_lane_and_close_it_for_flooding() {
    let mut h = Harness::new(|c, _| c.system_lane_bytes = 1024, vec![]);
    let ping =
        |id| Frame::new(Opcode::PING, FrameKind::Request { id }, Bytes::from_static(b"12345678"));
    let mut pongs = 0;
    for id in 1..=100 {
        h.frame(ping(id));
        for output in h.outputs() {
            match output {
                Output::Transmit(Transmit { lane: Lane::System, .. }) => pongs += 1,
                Output::Close { code, graceful, .. } => {
                    assert_eq!((code, graceful), (DisconnectCode::FLOODING, false));
                    let pong = ping(0).encoded_len();
                    assert_eq!(pongs, 1024 / pong, "pongs up to the bound, then the close");
                    return;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    panic!("never closed");
}

#[test]
fn write_credit_lets_the_remote_ask_for_ever_as_long_as_it_reads() {
    let mut h = Harness::new(|c, _| c.system_lane_bytes = 1024, vec![]);
    for id in 1..=1000 {
        h.frame(Frame::new(
            Opcode::PING,
            FrameKind::Request { id },
            Bytes::from_static(b"12345678"),
        ));
        let written = h.written(Lane::System);
        assert_eq!(written.len(), 1, "ping {id}");
        h.host.handle_write_credit(h.conn, Lane::System, written[0].encoded_len());
    }
}

/// Sends `n` protocol frames of `size` bytes to the first peer that connects.
struct Burst {
    n: usize,
    size: usize,
    results: std::sync::Arc<std::sync::Mutex<Vec<Result<(), SendError>>>>,
}
impl Protocol for Burst {
    fn opcodes(&self) -> Opcodes {
        app(3000).into()
    }
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        for _ in 0..self.n {
            let r = ctx.try_send(&peer.peer, app(3000), Bytes::from(vec![0; self.size]));
            self.results.lock().unwrap().push(r);
        }
    }
}

#[test]
fn protocol_frames_wait_in_the_host_for_credit_and_are_refused_beyond_their_queue() {
    let results = std::sync::Arc::default();
    let burst = Burst { n: 12, size: 1000, results: std::sync::Arc::clone(&results) };
    // Credit for two frames out at once; a queue of four more.
    let mut h = Harness::new(
        |c, _| {
            c.protocol_credit_bytes = 2100;
            c.protocol_queue_bytes = 4100;
        },
        vec![Box::new(burst)],
    );
    // The harness drained the first outputs: count what went out at connect time again.
    let sent: Vec<_> = results.lock().unwrap().clone();
    assert_eq!(sent.iter().filter(|r| r.is_ok()).count(), 6, "{sent:?}");
    assert!(sent[6..].iter().all(|r| *r == Err(SendError::Full)));
    // Two are out; each credit returned lets one more go, in order.
    for _ in 0..4 {
        h.host.handle_write_credit(h.conn, Lane::Message, 1012);
        assert_eq!(h.written(Lane::Message).len(), 1);
    }
    h.host.handle_write_credit(h.conn, Lane::Message, 1012);
    assert!(h.written(Lane::Message).is_empty(), "all six went out");
}

/// Requests on connect; records responses.
struct Asker(std::sync::Arc<std::sync::Mutex<Vec<Response>>>);
impl Protocol for Asker {
    fn opcodes(&self) -> Opcodes {
        app(4000).into()
    }
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        ctx.request(&peer.peer, app(4000), Bytes::new(), Duration::from_secs(2)).unwrap();
    }
    fn on_response(&mut self, _ctx: &mut Ctx<'_>, response: Response) {
        self.0.lock().unwrap().push(response);
    }
}

#[test]
fn requests_and_pings_time_out_on_virtual_time() {
    let responses = std::sync::Arc::default();
    let mut h = Harness::new(|_, _| {}, vec![Box::new(Asker(std::sync::Arc::clone(&responses)))]);
    let now = h.now;
    let ping = h.host.ping(h.remote, now).unwrap();
    h.outputs();
    h.advance(Duration::from_millis(1999));
    assert!(responses.lock().unwrap().is_empty());
    h.advance(Duration::from_millis(1));
    let got: Vec<_> = responses.lock().unwrap().iter().map(|r| r.result.clone()).collect();
    assert_eq!(got, vec![Err(sinew_protocol::RequestFailure::Timeout)]);
    assert!(!h.outputs().iter().any(|o| matches!(o, Output::PingDone { .. })), "the ping has 30 s");
    h.advance(Duration::from_secs(28));
    let done: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::PingDone { id, result } => Some((id, result)),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![(ping, Err(PingFailure::Timeout))]);
}

#[test]
fn a_late_answer_to_one_of_our_requests_reaches_nobody_else() {
    let mut h = Harness::new(|_, _| {}, vec![]);
    let id = crate::core::HOST_REQUEST_IDS + 1;
    h.frame(Frame::new(app(5000), FrameKind::Response { id }, Bytes::new()));
    assert!(h.outputs().is_empty());
    // An application's id is handed to the driver.
    h.frame(Frame::new(app(5000), FrameKind::Response { id: 77 }, Bytes::new()));
    let out = h.outputs();
    assert!(matches!(&out[..], [Output::Response { id: 77, .. }]), "{out:?}");
}

/// Panics on any message.
struct Bomb;
impl Protocol for Bomb {
    fn name(&self) -> &'static str {
        "bomb"
    }
    fn opcodes(&self) -> Opcodes {
        app(6000).into()
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _msg: Message) -> Handled {
        panic!("boom");
    }
}

#[test]
fn a_panicking_protocol_is_removed_and_its_opcodes_become_unknown() {
    let mut h = Harness::new(|_, _| {}, vec![Box::new(Bomb), Box::new(Echo)]);
    h.frame(Frame::new(app(6000), FrameKind::Request { id: 1 }, Bytes::new()));
    let out = h.outputs();
    assert!(
        out.iter().any(|o| matches!(o, Output::Event(HostEvent::ProtocolPanicked { protocol: "bomb", message }) if message == "boom")),
        "{out:?}"
    );
    h.frame(Frame::new(app(6000), FrameKind::Request { id: 2 }, Bytes::new()));
    let kinds: Vec<_> = h.written(Lane::System).into_iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FrameKind::Error { id: 2, status: Status::UNKNOWN_OPCODE }]);
    h.frame(Frame::new(app(1000), FrameKind::Request { id: 3 }, Bytes::new()));
    assert_eq!(h.written(Lane::Message).len(), 1, "the others go on");
}

#[test]
fn identify_is_sent_on_connect_and_recorded_when_it_arrives() {
    let mut h = Harness::new(|c, _| c.role = "admin".into(), vec![]);
    let now = h.now;
    h.host.set_advertised(vec!["tcp://192.0.2.1:4001".parse().unwrap()], now);
    let sent = h.written(Lane::System);
    assert_eq!(sent.len(), 1, "re-announced to the connected peer");
    let ours = <sinew_codec::messages::Identify as sinew_codec::messages::MessageBody>::decode(
        sent[0].payload.clone(),
    )
    .unwrap();
    assert_eq!((ours.role.as_str(), ours.listen_addrs.len()), ("admin", 1));
    h.frame(Frame::message(Opcode::IDENTIFY, sent[0].payload.clone()));
    assert_eq!(h.host.peer_info(&h.remote).unwrap().role(), "admin");
    h.frame(Frame::message(Opcode::IDENTIFY, Bytes::from_static(b"garbage")));
    let out = h.outputs();
    assert!(
        out.iter().any(|o| matches!(o, Output::Close { code: DisconnectCode::PROTOCOL_ERROR, .. })),
        "{out:?}"
    );
}

/// Fills the connection's credit, then asks to hear when there is room again.
struct Puller {
    calls: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}
impl Protocol for Puller {
    fn opcodes(&self) -> Opcodes {
        app(7000).into()
    }
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        while ctx.send_capacity(&peer.peer) > 0 {
            ctx.try_send(&peer.peer, app(7000), Bytes::from(vec![0; 500])).unwrap();
        }
        ctx.notify_writable(&peer.peer);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, peer: &PeerId) {
        self.calls.lock().unwrap().push(ctx.send_capacity(peer));
    }
}

#[test]
fn a_protocol_hears_once_when_the_connection_takes_more() {
    let calls = std::sync::Arc::default();
    let puller = Puller { calls: std::sync::Arc::clone(&calls) };
    let mut h = Harness::new(|c, _| c.protocol_credit_bytes = 2000, vec![Box::new(puller)]);
    assert!(calls.lock().unwrap().is_empty(), "no room yet: no call");
    // Three frames fit the credit; the fourth waits in the host. One written: the fourth goes,
    // and the room left is the protocol's.
    let len = Frame::message(app(7000), Bytes::from(vec![0; 500])).encoded_len();
    h.host.handle_write_credit(h.conn, Lane::Message, len);
    assert_eq!(*calls.lock().unwrap(), vec![2000 - 3 * len]);
    h.host.handle_write_credit(h.conn, Lane::Message, len);
    assert_eq!(calls.lock().unwrap().len(), 1, "one call per ask");
}
