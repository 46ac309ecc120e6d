//! The host's state apart from the protocols themselves, and the [`sinew_protocol::Host`] it
//! offers them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sinew_codec::{Frame, FrameKind, Opcode, OpcodeRange};
use sinew_peers::{ConnId, PeerManager};
use sinew_protocol::{
    Command as ProtocolCommand, PeerInfo, ProtocolId, Reason, RequestId, SendError, TimerId,
    TransferId,
};
use sinew_types::{Addr, Direction, PeerId};

use crate::config::HostConfig;
use crate::output::{Lane, Output, PingId, Transmit};

/// Most addresses remembered per peer, and peers remembered, in the address book.
const BOOK_ADDRS_PER_PEER: usize = 8;
const BOOK_PEERS: usize = 4096;
/// The host's request ids start here; the application's (handed out by the driver) stay
/// below, so a response finds its table by id alone.
pub(crate) const HOST_REQUEST_IDS: u64 = 1 << 62;
/// Outbound transfer ids have this bit set; the driver names inbound ones without it.
pub const OUTBOUND_TRANSFERS: u64 = 1 << 63;

/// An established connection the host knows, and its write credit.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) peer: PeerId,
    pub(crate) direction: Direction,
    pub(crate) remote_addr: Addr,
    /// System-lane bytes handed out and not reported written.
    pub(crate) system_used: usize,
}

/// Protocol frames for one peer that wait for write credit, and what was handed out.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    pub(crate) frames: VecDeque<Frame>,
    pub(crate) bytes: usize,
    /// Protocol-frame bytes handed to the driver and not reported written. Per peer, not per
    /// connection: the driver keeps them in the peer's queue, which whichever connection
    /// carries the peer writes, so a swap neither loses them nor their credit.
    pub(crate) out: usize,
}

/// An application ping waiting for its pong.
#[derive(Debug)]
pub(crate) struct UserPing {
    pub(crate) payload: [u8; 8],
    pub(crate) sent_at: Instant,
    pub(crate) deadline: Instant,
}

/// A request a protocol made.
#[derive(Debug)]
pub(crate) struct ProtocolRequest {
    pub(crate) protocol: ProtocolId,
    pub(crate) peer: PeerId,
    pub(crate) opcode: Opcode,
    pub(crate) deadline: Instant,
}

/// Everything protocols can see or change through their [`sinew_protocol::Host`].
pub(crate) struct Core {
    pub(crate) now: Instant,
    /// Unix time at the instant `unix_at`: unix time now is `unix + (now - unix_at)`.
    pub(crate) unix: Duration,
    pub(crate) unix_at: Instant,
    /// Dials protocols asked for, by connection: who to tell how each ended.
    pub(crate) dial_owners: BTreeMap<ConnId, (Addr, Vec<ProtocolId>)>,
    /// Why each failed dial failed, until the manager's verdict.
    pub(crate) dial_failures: BTreeMap<ConnId, sinew_peers::DialFailure>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) config: HostConfig,
    pub(crate) peers: PeerManager,
    /// Connected peers, sorted (the `Host::connected_peers` view).
    pub(crate) connected: Vec<PeerId>,
    /// Boxed: B-tree nodes hold eleven entries, so idle connections cost less.
    pub(crate) info: BTreeMap<PeerId, Box<PeerInfo>>,
    pub(crate) conns: BTreeMap<ConnId, Box<ConnEntry>>,
    /// Protocol frames waiting for credit, per peer.
    pub(crate) waiting: BTreeMap<PeerId, Waiting>,
    pub(crate) requests: BTreeMap<u64, ProtocolRequest>,
    pub(crate) request_deadlines: BTreeSet<(Instant, u64)>,
    next_request: u64,
    next_transfer: u64,
    /// Liveness pings in flight: (connection, request id) -> nonce (the payload echoed).
    pub(crate) pings: BTreeMap<(ConnId, u64), u64>,
    /// Application pings in flight, by (connection, request id), and their deadlines.
    pub(crate) user_pings: BTreeMap<(ConnId, u64), UserPing>,
    pub(crate) user_ping_deadlines: BTreeSet<(Instant, ConnId, u64)>,
    /// The connection of the frame being handled: replies on the system lane go back on it.
    pub(crate) replying_to: Option<(PeerId, ConnId)>,
    /// Connections whose remote flooded the system lane, to close after this round.
    pub(crate) flooded: Vec<ConnId>,
    pub(crate) timers: BTreeSet<(Instant, TimerId, ProtocolId)>,
    pub(crate) timer_at: BTreeMap<TimerId, Instant>,
    next_timer: u64,
    pub(crate) pending_commands: Vec<(ProtocolId, ProtocolCommand)>,
    /// Addresses that reached each peer, most recent first.
    pub(crate) address_book: BTreeMap<PeerId, Vec<Addr>>,
    /// Opcode routes, sorted by range.
    pub(crate) routes: Vec<(OpcodeRange, ProtocolId)>,
    /// Why each peer's last connection ended, as the connection saw it.
    pub(crate) close_reasons: BTreeMap<PeerId, Reason>,
    /// What this node advertises (identify's listen addresses).
    pub(crate) advertised: Vec<Addr>,
    pub(crate) shutting_down: bool,
    pub(crate) outputs: VecDeque<Output>,
    /// Protocols waiting for a peer's connection to take more frames (`on_writable`).
    pub(crate) writable_wanted: BTreeMap<PeerId, BTreeSet<ProtocolId>>,
    /// Peers whose connection can take more and has protocols waiting, to call this round.
    pub(crate) writable_ready: Vec<PeerId>,
}

impl Core {
    pub(crate) fn new(
        config: HostConfig,
        peers: PeerManager,
        rng: ChaCha8Rng,
        now: Instant,
    ) -> Self {
        Self {
            now,
            unix: Duration::ZERO,
            unix_at: now,
            dial_owners: BTreeMap::new(),
            dial_failures: BTreeMap::new(),
            rng,
            config,
            peers,
            connected: Vec::new(),
            info: BTreeMap::new(),
            conns: BTreeMap::new(),
            waiting: BTreeMap::new(),
            requests: BTreeMap::new(),
            request_deadlines: BTreeSet::new(),
            next_request: HOST_REQUEST_IDS,
            next_transfer: 0,
            pings: BTreeMap::new(),
            user_pings: BTreeMap::new(),
            user_ping_deadlines: BTreeSet::new(),
            replying_to: None,
            flooded: Vec::new(),
            timers: BTreeSet::new(),
            timer_at: BTreeMap::new(),
            next_timer: 1,
            pending_commands: Vec::new(),
            address_book: BTreeMap::new(),
            routes: Vec::new(),
            close_reasons: BTreeMap::new(),
            advertised: Vec::new(),
            shutting_down: false,
            outputs: VecDeque::new(),
            writable_wanted: BTreeMap::new(),
            writable_ready: Vec::new(),
        }
    }

    /// A fresh outbound transfer id (the host's have the top bit set; the driver names inbound
    /// transfers below it).
    pub(crate) fn next_transfer(&mut self) -> TransferId {
        self.next_transfer += 1;
        TransferId(OUTBOUND_TRANSFERS | self.next_transfer)
    }

    /// A fresh request id of the host's own.
    pub(crate) fn next_request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Whether `conn` is established and belongs to `peer`.
    pub(crate) fn conn_peer_is(&self, conn: ConnId, peer: PeerId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.peer == peer)
    }

    /// The protocol handling `opcode`.
    pub(crate) fn route(&self, opcode: Opcode) -> Option<ProtocolId> {
        self.routes.iter().find(|(range, _)| range.contains(opcode)).map(|(_, id)| *id)
    }

    /// Remembers that `addr` reached `peer` (bounded).
    pub(crate) fn remember_addr(&mut self, peer: PeerId, addr: Addr) {
        if !self.address_book.contains_key(&peer) && self.address_book.len() >= BOOK_PEERS {
            return;
        }
        let addrs = self.address_book.entry(peer).or_default();
        let addr = addr.without_peer();
        addrs.retain(|a| *a != addr);
        addrs.insert(0, addr);
        addrs.truncate(BOOK_ADDRS_PER_PEER);
    }

    fn is_authorized(&self, peer: &PeerId) -> bool {
        self.info.get(peer).is_some_and(|info| info.authorized)
    }

    /// Queues a frame for a connected peer without waiting. System frames go on the system
    /// lane of the peer's active connection, or, for a reply, of the connection the request
    /// came on; frames above the control-frame cap on a stream of their own; other protocol
    /// frames wait in the host for the active connection's write credit.
    pub(crate) fn queue_frame(&mut self, peer: &PeerId, frame: Frame) -> Result<(), SendError> {
        if self.shutting_down {
            return Err(SendError::ShuttingDown);
        }
        if !self.info.contains_key(peer) {
            return Err(SendError::NotConnected);
        }
        if !self.is_authorized(peer) && !self.config.access.allows_unauthorized(frame.opcode) {
            return Err(SendError::Unauthorized);
        }
        if frame.is_system() {
            let reply = matches!(frame.kind, FrameKind::Response { .. } | FrameKind::Error { .. });
            let conn = match self.replying_to {
                Some((p, conn)) if reply && p == *peer && self.conns.contains_key(&conn) => conn,
                _ => self.peers.active_connection(peer).ok_or(SendError::NotConnected)?,
            };
            return self.send_system(conn, frame);
        }
        let conn = self.peers.active_connection(peer).ok_or(SendError::NotConnected)?;
        if frame.payload.len() > self.config.control_frame_cap {
            let transfer = self.next_transfer();
            let lane = Lane::Large(transfer);
            self.outputs.push_back(Output::Transmit(Transmit { conn, lane, frame }));
            return Ok(());
        }
        let cap = self.config.protocol_queue_bytes;
        let waiting = self.waiting.entry(*peer).or_default();
        let len = frame.encoded_len();
        // A frame larger than the whole bound fits an empty queue.
        if !waiting.frames.is_empty() && waiting.bytes + len > cap {
            return Err(SendError::Full);
        }
        waiting.bytes += len;
        waiting.frames.push_back(frame);
        self.pump(peer);
        Ok(())
    }

    /// Hands `peer`'s waiting protocol frames to its active connection, within its credit
    /// (always one frame when nothing is outstanding).
    pub(crate) fn pump(&mut self, peer: &PeerId) {
        let Some(conn) = self.peers.active_connection(peer) else { return };
        if !self.conns.contains_key(&conn) {
            return;
        }
        let Some(waiting) = self.waiting.get_mut(peer) else {
            self.check_writable(peer);
            return;
        };
        let credit = self.config.protocol_credit_bytes;
        while let Some(front) = waiting.frames.front() {
            let len = front.encoded_len();
            if waiting.out > 0 && waiting.out + len > credit {
                break;
            }
            let Some(frame) = waiting.frames.pop_front() else { break };
            waiting.bytes -= len;
            waiting.out += len;
            self.outputs.push_back(Output::Transmit(Transmit { conn, lane: Lane::Message, frame }));
        }
        if waiting.frames.is_empty() && waiting.out == 0 {
            self.waiting.remove(peer);
        }
        self.check_writable(peer);
    }

    /// The peer's protocol frames were written (`bytes` of them): their credit comes back.
    pub(crate) fn protocol_written(&mut self, peer: &PeerId, bytes: usize) {
        if let Some(waiting) = self.waiting.get_mut(peer) {
            waiting.out = waiting.out.saturating_sub(bytes);
        }
        self.pump(peer);
    }

    /// Protocol bytes `peer`'s active connection takes now: its credit, less what is out and
    /// what waits in the host.
    pub(crate) fn send_capacity_of(&self, peer: &PeerId) -> usize {
        if !self.peers.active_connection(peer).is_some_and(|c| self.conns.contains_key(&c)) {
            return 0;
        }
        let used = self.waiting.get(peer).map_or(0, |w| w.out + w.bytes);
        self.config.protocol_credit_bytes.saturating_sub(used)
    }

    /// Files `peer` for `on_writable` calls if protocols wait for it and it can take more.
    fn check_writable(&mut self, peer: &PeerId) {
        if self.writable_wanted.contains_key(peer)
            && self.send_capacity_of(peer) > 0
            && !self.writable_ready.contains(peer)
        {
            self.writable_ready.push(*peer);
        }
    }

    /// Queues a system frame on one connection. An answer to the remote (a response or an
    /// error) that does not fit means the remote asks faster than it reads: the connection is
    /// closed with `FLOODING` (after this round). A frame of our own is refused with `Full`.
    pub(crate) fn send_system(&mut self, conn: ConnId, frame: Frame) -> Result<(), SendError> {
        let cap = self.config.system_lane_bytes;
        let Some(entry) = self.conns.get_mut(&conn) else { return Err(SendError::NotConnected) };
        let len = frame.encoded_len();
        if len > cap {
            return Err(SendError::TooLarge);
        }
        if entry.system_used + len > cap {
            // Answers to the remote: responses, errors, and keepalive responses.
            let answer = matches!(frame.kind, FrameKind::Response { .. } | FrameKind::Error { .. })
                || frame.opcode == Opcode::KEEPALIVE_RESPONSE;
            if answer && !self.flooded.contains(&conn) {
                self.flooded.push(conn);
            }
            return Err(SendError::Full);
        }
        entry.system_used += len;
        self.outputs.push_back(Output::Transmit(Transmit { conn, lane: Lane::System, frame }));
        Ok(())
    }

    /// Sends an application ping on the peer's active connection's system lane.
    pub(crate) fn user_ping(&mut self, peer: &PeerId) -> Result<PingId, SendError> {
        let conn = self.peers.active_connection(peer).ok_or(SendError::NotConnected)?;
        let id = self.next_request_id();
        let payload: [u8; 8] = self.rng.next_u64().to_le_bytes();
        let frame = Frame::new(
            Opcode::PING,
            FrameKind::Request { id },
            bytes::Bytes::copy_from_slice(&payload),
        );
        self.send_system(conn, frame)?;
        let deadline = self.now + self.config.request_timeout;
        self.user_ping_deadlines.insert((deadline, conn, id));
        self.user_pings.insert((conn, id), UserPing { payload, sent_at: self.now, deadline });
        Ok(PingId(id))
    }

    /// The earliest deadline of timers, requests, pings and the peer manager.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(at, _, _)| *at);
        let request = self.request_deadlines.first().map(|(at, _)| *at);
        let ping = self.user_ping_deadlines.first().map(|(at, _, _)| *at);
        [timer, request, ping, self.peers.poll_timeout()].into_iter().flatten().min()
    }
}

impl sinew_protocol::Host for Core {
    fn now(&self) -> Instant {
        self.now
    }

    fn unix_time(&self) -> Duration {
        self.unix + self.now.saturating_duration_since(self.unix_at)
    }

    fn rng(&mut self) -> &mut dyn Rng {
        &mut self.rng
    }

    fn local_peer(&self) -> PeerId {
        self.config.local
    }

    fn connected_peers(&self) -> &[PeerId] {
        &self.connected
    }

    fn peer_info(&self, peer: &PeerId) -> Option<&PeerInfo> {
        self.info.get(peer).map(|info| &**info)
    }

    fn send_frame(&mut self, peer: &PeerId, frame: Frame) -> Result<(), SendError> {
        self.queue_frame(peer, frame)
    }

    fn send_capacity(&self, peer: &PeerId) -> usize {
        if !self.info.contains_key(peer) || self.shutting_down {
            return 0;
        }
        self.send_capacity_of(peer)
    }

    fn want_writable(&mut self, protocol: ProtocolId, peer: &PeerId) {
        if !self.info.contains_key(peer) {
            return;
        }
        self.writable_wanted.entry(*peer).or_default().insert(protocol);
        self.check_writable(peer);
    }

    fn send_large(&mut self, peer: &PeerId, frame: Frame) -> Result<TransferId, SendError> {
        if self.shutting_down {
            return Err(SendError::ShuttingDown);
        }
        if !self.info.contains_key(peer) {
            return Err(SendError::NotConnected);
        }
        if frame.is_system() {
            // System frames travel on the control stream only.
            return Err(SendError::TooLarge);
        }
        if !self.is_authorized(peer) && !self.config.access.allows_unauthorized(frame.opcode) {
            return Err(SendError::Unauthorized);
        }
        let conn = self.peers.active_connection(peer).ok_or(SendError::NotConnected)?;
        let transfer = self.next_transfer();
        let lane = Lane::Large(transfer);
        self.outputs.push_back(Output::Transmit(Transmit { conn, lane, frame }));
        Ok(transfer)
    }

    fn start_request(
        &mut self,
        protocol: ProtocolId,
        peer: &PeerId,
        opcode: Opcode,
        timeout: Duration,
    ) -> RequestId {
        let id = self.next_request_id();
        let deadline = self.now + timeout;
        self.requests.insert(id, ProtocolRequest { protocol, peer: *peer, opcode, deadline });
        self.request_deadlines.insert((deadline, id));
        RequestId(id)
    }

    fn abandon_request(&mut self, id: RequestId) {
        if let Some(request) = self.requests.remove(&id.0) {
            self.request_deadlines.remove(&(request.deadline, id.0));
        }
    }

    fn set_timer(&mut self, protocol: ProtocolId, at: Instant) -> TimerId {
        let id = TimerId(self.next_timer);
        self.next_timer += 1;
        self.timers.insert((at, id, protocol));
        self.timer_at.insert(id, at);
        id
    }

    fn cancel_timer(&mut self, protocol: ProtocolId, timer: TimerId) {
        if let Some(at) = self.timer_at.remove(&timer) {
            self.timers.remove(&(at, timer, protocol));
        }
    }

    fn command(&mut self, protocol: ProtocolId, command: ProtocolCommand) {
        self.pending_commands.push((protocol, command));
    }
}
