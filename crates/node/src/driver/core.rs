//! The driver's state apart from the protocols themselves, and the `Host` it offers them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sinew_codec::{Frame, FrameKind, Opcode, OpcodeRange};
use sinew_peers::{ConnId, PeerManager};
use sinew_protocol::{
    Command as ProtocolCommand, Host, PeerInfo, ProtocolId, RequestId, SendError, TimerId,
};
use sinew_transport::MuxedConnection;
use sinew_types::{Addr, PeerId};
use tokio::sync::oneshot;

use crate::conn::system::SystemQueue;
use crate::conn::{ConnCommand, outbound};
use crate::error::{DialError, RequestError};
use crate::queue::PeerQueue;
use crate::shared::Shared;
use crate::stats::ConnStats;

/// Most addresses remembered per peer, and peers remembered, in the address book.
const BOOK_ADDRS_PER_PEER: usize = 8;
const BOOK_PEERS: usize = 4096;
/// Refused sockets kept at once to deliver their refusal record (each for at most a second);
/// beyond that, refused sockets are closed without one.
pub(crate) const REFUSALS_IN_FLIGHT: usize = 64;

/// An established connection the driver knows.
pub(crate) struct ConnEntry {
    pub(crate) peer: PeerId,
    pub(crate) direction: sinew_types::Direction,
    pub(crate) remote_addr: Addr,
    pub(crate) commands: futures::channel::mpsc::Sender<ConnCommand>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) muxer: MuxedConnection,
    /// Its system lane.
    pub(crate) system: Arc<SystemQueue>,
    /// Its task, aborted if it outlives shutdown's grace period.
    pub(crate) task: tokio::task::AbortHandle,
}

impl ConnEntry {
    /// Sends a command; if the channel is full, delivers it from a task (commands that must
    /// not be lost: close, drain, activate).
    pub(crate) fn command(&self, command: ConnCommand) {
        let mut tx = self.commands.clone();
        if let Err(error) = tx.try_send(command)
            && error.is_full()
        {
            let command = error.into_inner();
            tokio::spawn(async move {
                use futures::SinkExt as _;
                let _ = tx.send(command).await;
            });
        }
    }
}

/// A ping the application asked for (`Node::ping`), waiting for its pong.
pub(crate) struct UserPing {
    pub(crate) payload: [u8; 8],
    pub(crate) sent_at: Instant,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Result<Duration, RequestError>>,
}

/// A request a protocol made.
pub(crate) struct ProtocolRequest {
    pub(crate) protocol: ProtocolId,
    pub(crate) peer: PeerId,
    pub(crate) opcode: Opcode,
    pub(crate) deadline: Instant,
}

/// The driver's state: everything protocols can see or change through their [`Host`].
pub(crate) struct Core {
    pub(crate) now: Instant,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peers: PeerManager,
    /// Connected peers, sorted (the `Host::connected_peers` view).
    pub(crate) connected: Vec<PeerId>,
    /// Boxed entries here and in `conns`: B-tree nodes hold eleven of them, so idle
    /// connections cost less (measured per connection).
    pub(crate) info: BTreeMap<PeerId, Box<PeerInfo>>,
    pub(crate) conns: BTreeMap<ConnId, Box<ConnEntry>>,
    /// Dials and upgrades in progress, to abort on shutdown.
    pub(crate) pending: BTreeMap<ConnId, tokio::task::AbortHandle>,
    pub(crate) dial_waiters: BTreeMap<ConnId, Vec<oneshot::Sender<Result<PeerId, DialError>>>>,
    pub(crate) dial_errors: BTreeMap<ConnId, DialError>,
    /// Peers' outbound queues; a persistent peer's survives its disconnection.
    pub(crate) queues: BTreeMap<PeerId, Arc<PeerQueue>>,
    pub(crate) requests: BTreeMap<u64, ProtocolRequest>,
    pub(crate) request_deadlines: BTreeSet<(Instant, u64)>,
    /// Liveness pings in flight: (connection, request id) -> nonce (the payload echoed).
    pub(crate) pings: BTreeMap<(ConnId, u64), u64>,
    /// Application pings in flight, by (connection, request id), and their deadlines.
    pub(crate) user_pings: BTreeMap<(ConnId, u64), UserPing>,
    pub(crate) user_ping_deadlines: BTreeSet<(Instant, ConnId, u64)>,
    /// The connection of the frame being handled: replies on the system lane go back on it.
    pub(crate) replying_to: Option<(PeerId, ConnId)>,
    /// Connections whose remote flooded the system lane, to close after this round.
    pub(crate) flooded: Vec<ConnId>,
    /// Refused sockets being told why, at most [`REFUSALS_IN_FLIGHT`] at once.
    pub(crate) refusals: Arc<tokio::sync::Semaphore>,
    pub(crate) timers: BTreeSet<(Instant, TimerId, ProtocolId)>,
    pub(crate) timer_at: BTreeMap<TimerId, Instant>,
    next_timer: u64,
    pub(crate) pending_commands: Vec<(ProtocolId, ProtocolCommand)>,
    /// Addresses that reached each peer, most recent first.
    pub(crate) address_book: BTreeMap<PeerId, Vec<Addr>>,
    /// Opcode routes: (range, protocol index in the driver's list), sorted by range.
    pub(crate) routes: Vec<(OpcodeRange, ProtocolId)>,
    /// Why each peer's last connection ended, as the connection saw it.
    pub(crate) close_reasons: BTreeMap<PeerId, sinew_protocol::Reason>,
}

impl Core {
    pub(crate) fn new(shared: Arc<Shared>, peers: PeerManager, rng: ChaCha8Rng) -> Self {
        Self {
            now: Instant::now(),
            rng,
            shared,
            peers,
            connected: Vec::new(),
            info: BTreeMap::new(),
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            dial_waiters: BTreeMap::new(),
            dial_errors: BTreeMap::new(),
            queues: BTreeMap::new(),
            requests: BTreeMap::new(),
            request_deadlines: BTreeSet::new(),
            pings: BTreeMap::new(),
            user_pings: BTreeMap::new(),
            user_ping_deadlines: BTreeSet::new(),
            replying_to: None,
            flooded: Vec::new(),
            refusals: Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT)),
            timers: BTreeSet::new(),
            timer_at: BTreeMap::new(),
            next_timer: 1,
            pending_commands: Vec::new(),
            address_book: BTreeMap::new(),
            routes: Vec::new(),
            close_reasons: BTreeMap::new(),
        }
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

    /// Queues a frame for a connected peer without waiting. System frames go on the system
    /// lane of the peer's active connection, or, for a reply, of the connection the request
    /// came on; application frames go to the peer queue, and those above the control cap on a
    /// stream of their own.
    pub(crate) fn queue_frame(&mut self, peer: &PeerId, frame: Frame) -> Result<(), SendError> {
        if self.shared.is_shutting_down() {
            return Err(SendError::ShuttingDown);
        }
        let Some(info) = self.info.get(peer) else { return Err(SendError::NotConnected) };
        if !info.authorized && !self.shared.config.access.allows_unauthorized(frame.opcode) {
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
        if frame.payload.len() > self.shared.config.control_frame_cap {
            let slot = self.shared.peer(peer).ok_or(SendError::NotConnected)?;
            return outbound::try_send_large(&self.shared, slot, frame);
        }
        self.queues.get(peer).ok_or(SendError::NotConnected)?.try_push(frame)
    }

    /// Queues a system frame on one connection. An answer to the remote (a response or an
    /// error) that does not fit means the remote asks faster than it reads: the connection is
    /// closed with `FLOODING` (after this round). A frame of our own is refused with `Full`.
    pub(crate) fn send_system(&mut self, conn: ConnId, frame: Frame) -> Result<(), SendError> {
        let Some(entry) = self.conns.get(&conn) else { return Err(SendError::NotConnected) };
        // Answers to the remote: responses, errors, and keepalive responses.
        let answer = matches!(frame.kind, FrameKind::Response { .. } | FrameKind::Error { .. })
            || frame.opcode == Opcode::KEEPALIVE_RESPONSE;
        let result = entry.system.try_push(frame);
        if result == Err(SendError::Full) && answer && !self.flooded.contains(&conn) {
            self.flooded.push(conn);
        }
        result
    }

    /// The earliest deadline of timers and protocol requests.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(at, _, _)| *at);
        let request = self.request_deadlines.first().map(|(at, _)| *at);
        let ping = self.user_ping_deadlines.first().map(|(at, _, _)| *at);
        [timer, request, ping, self.peers.poll_timeout()].into_iter().flatten().min()
    }
}

impl Host for Core {
    fn now(&self) -> Instant {
        self.now
    }

    fn rng(&mut self) -> &mut dyn Rng {
        &mut self.rng
    }

    fn local_peer(&self) -> PeerId {
        self.shared.local
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

    fn start_request(
        &mut self,
        protocol: ProtocolId,
        peer: &PeerId,
        opcode: Opcode,
        timeout: Duration,
    ) -> RequestId {
        let id = self.shared.next_request_id();
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
