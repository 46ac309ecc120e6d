//! Deadlines: ping, idle, authorization, drain, lingering peers and redials.

use std::time::Instant;

use sinew_types::PeerId;

use super::{LinkState, PeerManager};
use crate::conn::Expired;
use crate::types::{Action, ConnId, Reason};

impl PeerManager {
    /// Runs every deadline that passed at `now`, in connection id order, then lingering peers,
    /// then redials. Afterwards [`poll_timeout`](Self::poll_timeout) is later than `now`.
    ///
    /// - Ping: every `ping_interval` an established connection gets [`Action::SendPing`]; a
    ///   ping unanswered for `ping_timeout` is missed, and `max_missed_pings` misses in a row
    ///   close it with [`Reason::PingTimeout`].
    /// - Idle: no activity and no open stream for `idle_timeout` closes it with
    ///   [`Reason::Idle`] (persistent peers are exempt).
    /// - Authorization: not authorized within `auth_timeout` closes it with
    ///   [`Reason::Unauthorized`].
    /// - Drain: a draining connection that has not ended within `drain_timeout` is closed with
    ///   [`Reason::Duplicate`].
    /// - Redial: a persistent peer whose backoff delay passed is dialled.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.run_conn_deadlines(id, now);
        }
        let expired: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l.state, LinkState::Lingering { until, .. } if until <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            // The announced successor never completed its handshake.
            self.disconnect_peer(peer, Reason::Remote, now, true);
        }
        self.run_redials(now);
    }

    fn run_conn_deadlines(&mut self, id: ConnId, now: Instant) {
        // Each step closes the connection or moves the deadline it handled past `now`, so this
        // ends after at most one step per deadline kind.
        loop {
            let Some(c) = self.conns.get(&id) else { return };
            let Some(expired) = c.expired(&self.config, self.idle_exempt(c), now) else { return };
            match expired {
                Expired::Drain => self.close(id, Reason::Duplicate),
                Expired::Auth => self.close(id, Reason::Unauthorized),
                Expired::Idle => self.close(id, Reason::Idle),
                Expired::PingMissed => {
                    let Some(c) = self.conns.get_mut(&id) else { return };
                    c.ping.outstanding = None;
                    c.ping.missed = c.ping.missed.saturating_add(1);
                    if c.ping.missed >= self.config.max_missed_pings {
                        self.close(id, Reason::PingTimeout);
                    }
                }
                Expired::PingDue => {
                    let nonce = self.next_ping_nonce;
                    self.next_ping_nonce = nonce.wrapping_add(1);
                    let Some(c) = self.conns.get_mut(&id) else { return };
                    c.ping.outstanding = Some((nonce, now));
                    c.ping.next_at = Some(now + self.config.ping_interval);
                    self.emit(Action::SendPing { conn: id, nonce });
                }
            }
        }
    }
}
