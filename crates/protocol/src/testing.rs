//! An in-memory [`Host`] for unit-testing protocols on virtual time, without a node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use sinew_codec::Frame;
use sinew_codec::Opcode;
use sinew_types::PeerId;

use crate::{Command, Ctx, Host, PeerInfo, Protocol, ProtocolId, RequestId, SendError, TimerId};

/// Records everything protocols do. Frames go to [`TestHost::sent`], commands to
/// [`TestHost::commands`]; time moves only with [`TestHost::advance`].
pub struct TestHost {
    now: Instant,
    rng: ChaCha8Rng,
    local: PeerId,
    peers: Vec<PeerId>,
    info: BTreeMap<PeerId, PeerInfo>,
    /// Frames queued, in order, with their destination.
    pub sent: Vec<(PeerId, Frame)>,
    /// Commands queued, in order.
    pub commands: Vec<Command>,
    /// Requests started: id -> (protocol, peer, opcode, deadline).
    pub requests: BTreeMap<RequestId, (ProtocolId, PeerId, Opcode, Instant)>,
    timers: BTreeMap<TimerId, (ProtocolId, Instant)>,
    next_id: u64,
    /// Peers whose queue is "full": sends to them fail with [`SendError::Full`].
    pub full: Vec<PeerId>,
    /// The unix time protocols see (set it freely).
    pub unix: Duration,
    /// Peers protocols asked `on_writable` for, in order.
    pub writable_wanted: Vec<PeerId>,
}

impl TestHost {
    /// A host for `local` at virtual time `now`, with a seeded RNG.
    pub fn new(local: PeerId, now: Instant, seed: u64) -> Self {
        Self {
            now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            local,
            peers: Vec::new(),
            info: BTreeMap::new(),
            sent: Vec::new(),
            commands: Vec::new(),
            requests: BTreeMap::new(),
            timers: BTreeMap::new(),
            next_id: 1,
            full: Vec::new(),
            unix: Duration::ZERO,
            writable_wanted: Vec::new(),
        }
    }

    /// Adds a connected peer.
    pub fn connect(&mut self, info: PeerInfo) {
        if let Err(i) = self.peers.binary_search(&info.peer) {
            self.peers.insert(i, info.peer);
        }
        self.info.insert(info.peer, info);
    }

    /// Removes a peer.
    pub fn disconnect(&mut self, peer: &PeerId) {
        self.peers.retain(|p| p != peer);
        self.info.remove(peer);
    }

    /// A context for `protocol`, to call its callbacks directly.
    pub fn ctx(&mut self, protocol: &impl Protocol) -> Ctx<'_> {
        let name = protocol.name();
        Ctx::new(self, ProtocolId(0), name)
    }

    /// Moves virtual time forward by `by` and fires every timer that became due, in order.
    pub fn advance(&mut self, protocol: &mut impl Protocol, by: Duration) {
        let until = self.now + by;
        loop {
            let due = self
                .timers
                .iter()
                .filter(|(_, (_, at))| *at <= until)
                .min_by_key(|(id, (_, at))| (*at, **id))
                .map(|(id, (_, at))| (*id, *at));
            let Some((id, at)) = due else { break };
            self.timers.remove(&id);
            self.now = self.now.max(at);
            let mut ctx = self.ctx(protocol);
            protocol.on_timer(&mut ctx, id);
        }
        self.now = until;
    }

    /// Pending timers' deadlines, earliest first.
    pub fn timer_deadlines(&self) -> Vec<Instant> {
        let mut v: Vec<Instant> = self.timers.values().map(|(_, at)| *at).collect();
        v.sort();
        v
    }

    /// Takes the frames sent so far.
    pub fn take_sent(&mut self) -> Vec<(PeerId, Frame)> {
        std::mem::take(&mut self.sent)
    }
}

impl Host for TestHost {
    fn now(&self) -> Instant {
        self.now
    }

    fn unix_time(&self) -> Duration {
        self.unix
    }

    fn send_capacity(&self, peer: &PeerId) -> usize {
        if self.info.contains_key(peer) && !self.full.contains(peer) { usize::MAX } else { 0 }
    }

    fn want_writable(&mut self, _protocol: ProtocolId, peer: &PeerId) {
        self.writable_wanted.push(*peer);
    }

    fn send_large(&mut self, peer: &PeerId, frame: Frame) -> Result<crate::TransferId, SendError> {
        self.send_frame(peer, frame)?;
        self.next_id += 1;
        Ok(crate::TransferId(self.next_id))
    }

    fn rng(&mut self) -> &mut dyn Rng {
        &mut self.rng
    }

    fn local_peer(&self) -> PeerId {
        self.local
    }

    fn connected_peers(&self) -> &[PeerId] {
        &self.peers
    }

    fn peer_info(&self, peer: &PeerId) -> Option<&PeerInfo> {
        self.info.get(peer)
    }

    fn send_frame(&mut self, peer: &PeerId, frame: Frame) -> Result<(), SendError> {
        if !self.peers.contains(peer) {
            return Err(SendError::NotConnected);
        }
        if self.full.contains(peer) {
            return Err(SendError::Full);
        }
        self.sent.push((*peer, frame));
        Ok(())
    }

    fn start_request(
        &mut self,
        protocol: ProtocolId,
        peer: &PeerId,
        opcode: Opcode,
        timeout: Duration,
    ) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.requests.insert(id, (protocol, *peer, opcode, self.now + timeout));
        id
    }

    fn abandon_request(&mut self, id: RequestId) {
        self.requests.remove(&id);
    }

    fn set_timer(&mut self, protocol: ProtocolId, at: Instant) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.timers.insert(id, (protocol, at));
        id
    }

    fn cancel_timer(&mut self, _protocol: ProtocolId, timer: TimerId) {
        self.timers.remove(&timer);
    }

    fn command(&mut self, _protocol: ProtocolId, command: Command) {
        self.commands.push(command);
    }
}
