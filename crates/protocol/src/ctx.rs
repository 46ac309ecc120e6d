//! `Ctx`, what a protocol can do, and `Host`, what runs protocols (the node, the simulator,
//! a test host) must provide.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, RngExt as _};
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, MAX_MESSAGE, Opcode, Status};
use sinew_types::{Addr, PeerId};

use crate::{BroadcastReport, Message, PeerInfo, ProtocolEvent, RequestId, SendError, TimerId};

/// Identifies a registered protocol within its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolId(pub u32);

/// Commands a protocol queues for its host, beyond sending frames.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Mark the peer authorized.
    Authorize(PeerId),
    /// Close the connection to the peer, telling it why (a code, and a reason text).
    Disconnect(PeerId, DisconnectCode, String),
    /// Dial an address (one-shot).
    Dial(Addr),
    /// Keep a peer connected (reconnect with backoff).
    AddPeer(Addr),
    /// Hand an event to the application's event stream.
    Emit(ProtocolEvent),
    /// Hand a notice to this protocol's feed (see [`crate::Commands`]).
    Notify(crate::Erased),
    /// Stop a large transfer (reset its stream).
    CancelTransfer(crate::TransferId),
}

/// What a protocol's host provides. The node implements it over real connections; the
/// simulator and [`crate::testing::TestHost`] implement it in memory. Everything is
/// non-blocking: frames are queued (or refused with [`SendError::Full`]), commands are queued.
pub trait Host {
    /// The current time (virtual in simulations).
    fn now(&self) -> Instant;
    /// Unix time now (since 1970-01-01 UTC; virtual in simulations): for records that expire.
    fn unix_time(&self) -> Duration;
    /// The host's seeded RNG.
    fn rng(&mut self) -> &mut dyn Rng;
    /// This node's peer id.
    fn local_peer(&self) -> PeerId;
    /// Connected peers, sorted by peer id.
    fn connected_peers(&self) -> &[PeerId];
    /// What is known about a connected peer.
    fn peer_info(&self, peer: &PeerId) -> Option<&PeerInfo>;
    /// Queues a frame for a peer without waiting.
    fn send_frame(&mut self, peer: &PeerId, frame: Frame) -> Result<(), SendError>;
    /// Bytes of protocol frames `peer`'s connection takes now without queueing them (0 when
    /// not connected).
    fn send_capacity(&self, peer: &PeerId) -> usize;
    /// Calls `protocol`'s `on_writable` for `peer` once its connection can take more frames
    /// (at once if it can now).
    fn want_writable(&mut self, protocol: ProtocolId, peer: &PeerId);
    /// Queues a frame to travel on a stream of its own, whatever its size, and names the
    /// transfer (so it can be cancelled).
    fn send_large(&mut self, peer: &PeerId, frame: Frame) -> Result<crate::TransferId, SendError>;
    /// Allocates a request id and remembers that `protocol` awaits its response until
    /// `timeout` passes; the frame is sent by the caller with that id.
    fn start_request(
        &mut self,
        protocol: ProtocolId,
        peer: &PeerId,
        opcode: Opcode,
        timeout: Duration,
    ) -> RequestId;
    /// Forgets a request whose frame could not be sent.
    fn abandon_request(&mut self, id: RequestId);
    /// Calls `protocol`'s `on_timer` at `at`.
    fn set_timer(&mut self, protocol: ProtocolId, at: Instant) -> TimerId;
    /// Cancels a timer (no-op if it already fired).
    fn cancel_timer(&mut self, protocol: ProtocolId, timer: TimerId);
    /// Queues a command.
    fn command(&mut self, protocol: ProtocolId, command: Command);
}

/// A protocol's handle on its host during a callback. It queues actions; it does no I/O.
pub struct Ctx<'a> {
    host: &'a mut dyn Host,
    protocol: ProtocolId,
    name: &'static str,
}

impl<'a> Ctx<'a> {
    /// A context for `protocol` (named `name`) on `host`. Hosts call this; protocols receive it.
    pub fn new(host: &'a mut dyn Host, protocol: ProtocolId, name: &'static str) -> Self {
        Self { host, protocol, name }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.host.now()
    }

    /// Unix time now (since 1970-01-01 UTC), as the host was told: for signed records and
    /// expiries that other nodes read.
    pub fn unix_time(&self) -> Duration {
        self.host.unix_time()
    }

    /// The host's seeded RNG (deterministic in simulations).
    pub fn rng(&mut self) -> &mut dyn Rng {
        self.host.rng()
    }

    /// This node's peer id.
    pub fn local_peer(&self) -> PeerId {
        self.host.local_peer()
    }

    /// Connected peers, sorted.
    pub fn peers(&self) -> &[PeerId] {
        self.host.connected_peers()
    }

    /// What is known about a connected peer.
    pub fn peer(&self, peer: &PeerId) -> Option<&PeerInfo> {
        self.host.peer_info(peer)
    }

    fn check_size(payload: &Bytes) -> Result<(), SendError> {
        if payload.len() > MAX_MESSAGE { Err(SendError::TooLarge) } else { Ok(()) }
    }

    /// Queues a one-way message; [`SendError::Full`] if the peer's queue is full.
    pub fn try_send(
        &mut self,
        peer: &PeerId,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<(), SendError> {
        Self::check_size(&payload)?;
        self.host.send_frame(peer, Frame::message(opcode, payload))
    }

    /// Bytes of this node's protocol frames `peer`'s connection takes now without queueing
    /// them (the host's write credit, less what waits): send about this much, keep the rest in
    /// your own queue, and ask for [`crate::Protocol::on_writable`].
    pub fn send_capacity(&self, peer: &PeerId) -> usize {
        self.host.send_capacity(peer)
    }

    /// Asks for one [`crate::Protocol::on_writable`] call once `peer`'s connection can take
    /// more frames (at once, after this callback, if it can now). Protocols that keep their own
    /// queues, with their own priorities, pull from them there.
    pub fn notify_writable(&mut self, peer: &PeerId) {
        self.host.want_writable(self.protocol, peer);
    }

    /// Sends a message on a stream of its own, whatever its size (messages above the
    /// control-frame cap always do), and returns the transfer's id for
    /// [`Ctx::cancel_transfer`]. It may overtake, or be overtaken by, other messages.
    pub fn send_large(
        &mut self,
        peer: &PeerId,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<crate::TransferId, SendError> {
        Self::check_size(&payload)?;
        self.host.send_large(peer, Frame::message(opcode, payload))
    }

    /// Stops a large transfer, inbound ([`crate::Protocol::on_transfer_started`]) or outbound
    /// ([`Ctx::send_large`]): its stream is reset and nothing is delivered. A transfer that
    /// already ended is not affected.
    pub fn cancel_transfer(&mut self, transfer: crate::TransferId) {
        self.host.command(self.protocol, Command::CancelTransfer(transfer));
    }

    /// Sends a request; the answer (or a timeout) arrives in
    /// [`crate::Protocol::on_response`] with the returned id.
    pub fn request(
        &mut self,
        peer: &PeerId,
        opcode: Opcode,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<RequestId, SendError> {
        Self::check_size(&payload)?;
        let id = self.host.start_request(self.protocol, peer, opcode, timeout);
        let frame = Frame::new(opcode, FrameKind::Request { id: id.0 }, payload);
        match self.host.send_frame(peer, frame) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.host.abandon_request(id);
                Err(e)
            }
        }
    }

    /// Answers a request with a response of the same opcode. A message that was not a request
    /// needs no answer: this does nothing for it and returns `Ok`.
    pub fn reply(&mut self, to: &Message, payload: Bytes) -> Result<(), SendError> {
        Self::check_size(&payload)?;
        let Some(id) = to.request_id() else { return Ok(()) };
        self.host.send_frame(&to.peer, Frame::new(to.opcode, FrameKind::Response { id }, payload))
    }

    /// Answers a request with a response carrying another opcode (e.g. PING answered by PONG).
    pub fn reply_as(
        &mut self,
        to: &Message,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<(), SendError> {
        Self::check_size(&payload)?;
        let Some(id) = to.request_id() else { return Ok(()) };
        self.host.send_frame(&to.peer, Frame::new(opcode, FrameKind::Response { id }, payload))
    }

    /// Answers a request, or an acked message, with an error status.
    pub fn reply_error(&mut self, to: &Message, status: Status) -> Result<(), SendError> {
        let (FrameKind::Request { id } | FrameKind::Acked { id }) = to.kind else { return Ok(()) };
        self.host.send_frame(
            &to.peer,
            Frame::new(to.opcode, FrameKind::Error { id, status }, Bytes::new()),
        )
    }

    /// Queues a message for every connected peer; peers whose queue is full are skipped and
    /// reported.
    pub fn broadcast(&mut self, opcode: Opcode, payload: Bytes) -> BroadcastReport {
        let peers = self.host.connected_peers().to_vec();
        self.broadcast_to(&peers, opcode, payload)
    }

    /// Queues a message for each of `peers` (those not connected are skipped).
    pub fn broadcast_to(
        &mut self,
        peers: &[PeerId],
        opcode: Opcode,
        payload: Bytes,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        if Self::check_size(&payload).is_err() {
            return report;
        }
        for peer in peers {
            match self.host.send_frame(peer, Frame::message(opcode, payload.clone())) {
                Ok(()) => report.sent.push(*peer),
                Err(SendError::Full) => report.full.push(*peer),
                Err(_) => {}
            }
        }
        report
    }

    /// Queues a message for `n` connected peers chosen at random (all if fewer are connected).
    pub fn broadcast_randomly(
        &mut self,
        n: usize,
        opcode: Opcode,
        payload: Bytes,
    ) -> BroadcastReport {
        let mut peers = self.host.connected_peers().to_vec();
        let n = n.min(peers.len());
        // Partial Fisher-Yates: the first n entries become a uniform random sample.
        for i in 0..n {
            let j = self.host.rng().random_range(i..peers.len());
            peers.swap(i, j);
        }
        peers.truncate(n);
        self.broadcast_to(&peers, opcode, payload)
    }

    /// Calls this protocol's `on_timer` at `at`.
    pub fn set_timer(&mut self, at: Instant) -> TimerId {
        self.host.set_timer(self.protocol, at)
    }

    /// Calls this protocol's `on_timer` after `delay`.
    pub fn set_timer_in(&mut self, delay: Duration) -> TimerId {
        let at = self.host.now() + delay;
        self.host.set_timer(self.protocol, at)
    }

    /// Cancels a timer.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.host.cancel_timer(self.protocol, timer);
    }

    /// Marks a peer authorized.
    pub fn authorize(&mut self, peer: &PeerId) {
        self.host.command(self.protocol, Command::Authorize(*peer));
    }

    /// Closes the connection to a peer with a reason.
    pub fn disconnect(&mut self, peer: &PeerId, code: DisconnectCode) {
        self.disconnect_because(peer, code, "");
    }

    /// Closes the connection to a peer with a code and a reason text the peer receives in its
    /// `DISCONNECT` (at most 256 bytes; longer is cut). A `PROTOCOL_ERROR` closes at once;
    /// other codes close gracefully (what was sent before arrives first).
    pub fn disconnect_because(&mut self, peer: &PeerId, code: DisconnectCode, reason: &str) {
        self.host.command(self.protocol, Command::Disconnect(*peer, code, reason.to_owned()));
    }

    /// Dials an address once; [`crate::Protocol::on_dial_outcome`] tells how it ended.
    pub fn dial(&mut self, addr: Addr) {
        self.host.command(self.protocol, Command::Dial(addr));
    }

    /// Keeps a peer connected, reconnecting with backoff.
    pub fn add_peer(&mut self, addr: Addr) {
        self.host.command(self.protocol, Command::AddPeer(addr));
    }

    /// Feeds the application a notice: the protocol's [`crate::Commands::Notice`], read from
    /// the stream its handle gives (bounded: the oldest is dropped, and the reader told how
    /// many). A notice of another type is dropped.
    pub fn notify<T: std::any::Any + Send>(&mut self, notice: T) {
        self.host.command(self.protocol, Command::Notify(Box::new(notice)));
    }

    /// Hands an event to the application's event stream.
    pub fn emit<E: std::any::Any + Send + Sync>(&mut self, event: E) {
        let event = ProtocolEvent { protocol: self.name, event: Arc::new(event) };
        self.host.command(self.protocol, Command::Emit(event));
    }
}
