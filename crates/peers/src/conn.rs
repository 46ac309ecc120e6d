//! One connection's state and its deadlines: ping, idle, authorization and drain.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sinew_types::Direction;
use sinew_types::{Addr, PeerId};

use crate::config::PeersConfig;
use crate::types::{ConnState, Reason};

/// What the handshake established about a connection.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) peer: PeerId,
    pub(crate) remote_addr: Addr,
    pub(crate) boot_nonce: u64,
    pub(crate) session_tag: [u8; 32],
    pub(crate) established_at: Instant,
}

/// Ping bookkeeping of an established connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ping {
    /// When the next ping is due.
    pub(crate) next_at: Option<Instant>,
    /// The ping in flight: its nonce and when it was sent.
    pub(crate) outstanding: Option<(u64, Instant)>,
    /// Consecutive pings that went unanswered.
    pub(crate) missed: u32,
    /// The last measured round trip.
    pub(crate) rtt: Option<Duration>,
}

/// A deadline that passed, in the order [`Conn::expired`] checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// The drain took too long: close it.
    Drain,
    /// Not authorized in time: close it.
    Auth,
    /// The ping in flight went unanswered.
    PingMissed,
    /// No activity for the idle timeout: close it.
    Idle,
    /// Time to send a ping.
    PingDue,
}

/// One connection as the manager tracks it.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) direction: Direction,
    pub(crate) state: ConnState,
    /// Outbound: the address dialled (with the expected peer id, if any).
    pub(crate) dial_addr: Option<Addr>,
    /// Inbound: the accepted socket's remote address.
    pub(crate) remote_socket: Option<SocketAddr>,
    /// The IP this connection counts under for the per-IP limit (inbound only).
    pub(crate) counted_ip: Option<IpAddr>,
    /// Set when the handshake completes.
    /// Boxed: connections are kept in a B-tree whose nodes hold eleven entries each, so
    /// large inline fields multiply (idle memory per connection is measured).
    pub(crate) session: Option<Box<Session>>,
    pub(crate) authorized: bool,
    /// When an unauthorized active connection is closed; set when it becomes active, carried
    /// over by a duplicate swap (so a swap never extends it), cleared by authorization.
    pub(crate) auth_deadline: Option<Instant>,
    pub(crate) ping: Ping,
    pub(crate) last_activity: Instant,
    pub(crate) open_streams: u32,
    /// When a draining connection is closed if the node has not reported it closed.
    pub(crate) drain_deadline: Option<Instant>,
    /// The reason recorded for its end: ours when we asked to close, [`Reason::Remote`] when the
    /// remote announced it.
    pub(crate) reason: Option<Reason>,
    /// The remote announced it drains this connection as a duplicate: another connection to the
    /// same peer process should follow.
    pub(crate) remote_duplicate: bool,
}

impl Conn {
    /// A new pending connection.
    pub(crate) fn pending(direction: Direction, now: Instant) -> Self {
        Self {
            direction,
            state: ConnState::Pending,
            dial_addr: None,
            remote_socket: None,
            counted_ip: None,
            session: None,
            authorized: false,
            auth_deadline: None,
            ping: Ping::default(),
            last_activity: now,
            open_streams: 0,
            drain_deadline: None,
            reason: None,
            remote_duplicate: false,
        }
    }

    /// The peer the connection proved, or for a pending dial the one it expects.
    pub(crate) fn peer(&self) -> Option<PeerId> {
        match &self.session {
            Some(s) => Some(s.peer),
            None => self.dial_addr.as_ref().and_then(Addr::peer),
        }
    }

    /// The proven peer, once established.
    pub(crate) fn session_peer(&self) -> Option<PeerId> {
        self.session.as_ref().map(|s| s.peer)
    }

    /// Marks the handshake complete and starts the established deadlines.
    pub(crate) fn establish(&mut self, session: Session, config: &PeersConfig, now: Instant) {
        self.state = ConnState::Established;
        self.session = Some(Box::new(session));
        self.last_activity = now;
        self.ping.next_at = Some(now + config.ping_interval);
    }

    /// Starts draining with the configured deadline.
    pub(crate) fn start_drain(&mut self, config: &PeersConfig, now: Instant) {
        self.state = ConnState::Draining;
        self.drain_deadline = Some(now + config.drain_timeout);
        self.ping = Ping { rtt: self.ping.rtt, missed: self.ping.missed, ..Ping::default() };
    }

    /// Whether this is a remote-announced duplicate whose successor the manager should wait for
    /// (no other reason to close it was recorded).
    pub(crate) fn awaits_successor(&self) -> bool {
        self.remote_duplicate && matches!(self.reason, None | Some(Reason::Duplicate))
    }

    /// When the idle deadline falls, if it applies.
    fn idle_deadline(&self, config: &PeersConfig, idle_exempt: bool) -> Option<Instant> {
        match config.idle_timeout {
            Some(timeout) if !idle_exempt && self.open_streams == 0 => {
                Some(self.last_activity + timeout)
            }
            _ => None,
        }
    }

    fn unauthorized_deadline(&self) -> Option<Instant> {
        self.auth_deadline.filter(|_| !self.authorized)
    }

    /// The earliest deadline of this connection.
    pub(crate) fn next_deadline(&self, config: &PeersConfig, idle_exempt: bool) -> Option<Instant> {
        match self.state {
            ConnState::Pending | ConnState::Closing => None,
            ConnState::Draining => self.drain_deadline,
            ConnState::Established => [
                self.unauthorized_deadline(),
                self.ping.outstanding.map(|(_, sent)| sent + config.ping_timeout),
                self.idle_deadline(config, idle_exempt),
                self.ping.next_at,
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    /// The first deadline that passed at `now`, in the order they are handled: a closing
    /// deadline first, a missed pong before the next ping (the two fall together when
    /// `ping_timeout == ping_interval`).
    pub(crate) fn expired(
        &self,
        config: &PeersConfig,
        idle_exempt: bool,
        now: Instant,
    ) -> Option<Expired> {
        let passed = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        match self.state {
            ConnState::Pending | ConnState::Closing => None,
            ConnState::Draining => passed(self.drain_deadline).then_some(Expired::Drain),
            ConnState::Established => {
                if passed(self.unauthorized_deadline()) {
                    Some(Expired::Auth)
                } else if passed(self.ping.outstanding.map(|(_, sent)| sent + config.ping_timeout))
                {
                    Some(Expired::PingMissed)
                } else if passed(self.idle_deadline(config, idle_exempt)) {
                    Some(Expired::Idle)
                } else if passed(self.ping.next_at) {
                    Some(Expired::PingDue)
                } else {
                    None
                }
            }
        }
    }
}
