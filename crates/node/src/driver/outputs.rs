//! The host's outputs, turned into I/O and replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sinew_host::{HostEvent, Lane, Output, PingFailure, Transmit};
use sinew_peers::ConnId;
use sinew_types::PeerId;

use super::{ConnEntry, Driver};
use crate::conn::{ConnCommand, ConnEvent, outbound};
use crate::error::{DialError, RequestError};
use crate::events::Event;
use crate::queue::PeerQueue;
use crate::shared::PeerSlot;
use crate::state::{NetworkState, PeerState};

impl Driver {
    /// Applies everything the host asked for, in order.
    pub(super) fn apply_outputs(&mut self) {
        while let Some(output) = self.host.poll_output() {
            self.apply(output);
        }
    }

    fn entry(&self, conn: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&conn).map(|e| &**e)
    }

    fn apply(&mut self, output: Output) {
        match output {
            Output::Transmit(transmit) => self.transmit(transmit),
            Output::Dial { conn, addr, alternatives } => {
                let transports = self.shared.transports.clone();
                let stagger = self.shared.config.dial_stagger;
                let tx = self.conn_events_tx.clone();
                let task = tokio::spawn(async move {
                    let addrs = std::iter::once(addr).chain(alternatives).collect();
                    let result = super::dial::staggered(&transports, addrs, stagger).await;
                    let result = result.map(Box::new).map_err(Arc::new);
                    let _ = tx.send(ConnEvent::Dialed { conn, result }).await;
                });
                self.pending.insert(conn, task.abort_handle());
            }
            Output::Abort { conn } => {
                if let Some(task) = self.pending.remove(&conn) {
                    task.abort();
                }
            }
            Output::Close { conn, code, message, graceful } => {
                if let Some(entry) = self.entry(conn) {
                    entry.command(ConnCommand::Close { code, message, graceful });
                }
            }
            Output::Drain { conn } => {
                if let Some(entry) = self.entry(conn) {
                    entry.command(ConnCommand::Drain);
                }
            }
            Output::Activate { peer, conn } => self.activate(peer, conn),
            Output::PeerGone { peer, keep_queue } => {
                self.shared.peers.write().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                self.shared.fail_waiters(&peer);
                if !keep_queue && let Some(queue) = self.queues.remove(&peer) {
                    queue.close();
                }
            }
            Output::Authorized { conn } => {
                if let Some(entry) = self.entry(conn) {
                    entry.stats.authorized.store(true, Ordering::Relaxed);
                }
            }
            Output::DialSucceeded { conn, peer } => {
                for waiter in self.dial_waiters.remove(&conn).unwrap_or_default() {
                    let _ = waiter.send(Ok(peer));
                }
                self.dial_errors.remove(&conn);
            }
            Output::DialFailed { conn, addr } => {
                let error = self.dial_errors.remove(&conn).unwrap_or(DialError::Closed);
                self.shared.emit(Event::DialFailed { addr, error: error.clone() });
                for waiter in self.dial_waiters.remove(&conn).unwrap_or_default() {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
            Output::PingDone { id, result } => {
                if let Some(reply) = self.ping_waiters.remove(&id) {
                    let _ = reply.send(result.map_err(|failure| match failure {
                        PingFailure::Timeout => RequestError::Timeout,
                        _ => RequestError::Disconnected,
                    }));
                }
            }
            Output::Response { peer, id, opcode: _, result } => {
                if let Some(waiter) = self.shared.take_waiter(id) {
                    if waiter.peer != peer {
                        // Only the peer asked may answer; put it back for the right one.
                        self.shared.add_waiter(id, waiter);
                        return;
                    }
                    let _ = waiter.tx.send(result.map_err(RequestError::Remote));
                }
            }
            Output::Event(event) => self.shared.emit(event_of(event)),
            Output::Notice { protocol, notice } => {
                if let Some(feed) = self.feeds.get(&protocol) {
                    feed.push(notice);
                }
            }
            Output::CancelTransfer { transfer } => self.shared.cancel_transfer(transfer.0),
            Output::ProtocolGone { protocol } => {
                if let Some(feed) = self.feeds.remove(&protocol) {
                    feed.close();
                }
            }
        }
    }

    fn transmit(&mut self, Transmit { conn, lane, frame }: Transmit) {
        let len = frame.encoded_len();
        let (Some(entry), Some(peer)) = (self.entry(conn), self.host.conn_peer(conn)) else {
            return;
        };
        let result = match lane {
            Lane::System => entry.system.try_push(frame),
            Lane::Message => match self.queues.get(&peer) {
                // The peer's queue, not the connection's: whichever connection holds the
                // peer's lane writes them, so a swap loses or reorders none.
                Some(queue) => {
                    queue.push_protocol(frame);
                    Ok(())
                }
                None => Err(crate::SendError::NotConnected),
            },
            Lane::Large(transfer) => match self.shared.peer(&peer) {
                Some(slot) => outbound::try_send_large(&self.shared, slot, frame, Some(transfer.0)),
                None => Err(crate::SendError::NotConnected),
            },
        };
        if let Err(error) = result {
            // A finished (closing) lane refuses, or the application's own system frames took
            // the room: the host's credit for the frame comes back at once.
            tracing::debug!(%conn, ?lane, %error, "frame not queued");
            if matches!(lane, Lane::System | Lane::Message) {
                self.host.handle_write_credit(conn, lane, len);
            }
        }
    }

    /// Makes `conn` the connection carrying `peer`'s queue.
    fn activate(&mut self, peer: PeerId, conn: ConnId) {
        let Some(entry) = self.conns.get(&conn) else { return };
        let queue_bytes = self.shared.config.peer_queue_bytes;
        let queue =
            self.queues.entry(peer).or_insert_with(|| Arc::new(PeerQueue::new(queue_bytes)));
        if queue.is_closed() {
            *queue = Arc::new(PeerQueue::new(queue_bytes));
        }
        let queue = queue.clone();
        entry.command(ConnCommand::Activate(queue.clone()));
        let slot = PeerSlot {
            queue,
            muxer: entry.muxer.clone(),
            stats: entry.stats.clone(),
            system: entry.system.clone(),
        };
        self.shared.peers.write().unwrap_or_else(|e| e.into_inner()).insert(peer, slot);
    }

    pub(super) fn network_state(&self) -> NetworkState {
        let now = std::time::Instant::now();
        let manager = self.host.manager();
        let peers = self
            .host
            .peer_infos()
            .map(|info| {
                let conn = manager.active_connection(&info.peer);
                let view = conn.and_then(|c| manager.connection(c));
                let entry = conn.and_then(|c| self.conns.get(&c));
                let stats = entry.map(|e| e.stats.clone());
                let load = |f: fn(&crate::stats::ConnStats) -> u64| stats.as_deref().map_or(0, f);
                let queue = self.queues.get(&info.peer);
                PeerState {
                    peer: info.peer,
                    addr: info.remote_addr.clone(),
                    security: entry.map(|e| e.security),
                    direction: info.direction,
                    role: info.role().to_owned(),
                    agent: info.identity.as_ref().map(|i| i.agent.clone()).unwrap_or_default(),
                    listen_addrs: info
                        .identity
                        .as_ref()
                        .map(|i| i.listen_addrs.clone())
                        .unwrap_or_default(),
                    rtt: view.and_then(|v| v.rtt),
                    bytes_in: load(|s| s.bytes_in.load(Ordering::Relaxed)),
                    bytes_out: load(|s| s.bytes_out.load(Ordering::Relaxed)),
                    msgs_in: load(|s| s.msgs_in.load(Ordering::Relaxed)),
                    msgs_out: load(|s| s.msgs_out.load(Ordering::Relaxed)),
                    age: now.saturating_duration_since(info.connected_at),
                    authorized: info.authorized,
                    queued_bytes: queue.map_or(0, |q| q.queued_bytes()),
                    dropped: queue.map_or(0, |q| q.dropped()),
                }
            })
            .collect();
        let counts = manager.counts();
        NetworkState {
            local: self.shared.local,
            listen_addrs: self.shared.listen_addrs(),
            peers,
            connections: counts.total,
            inbound: counts.inbound,
            outbound: counts.outbound,
            pending_handshakes: counts.pending_handshakes,
            pending_requests: self.shared.waiter_count() + self.host.pending_requests(),
            large_receive_bytes: self.shared.large_in.used(),
            nat: self.shared.nat_state(),
        }
    }
}

/// A host event as the application's event stream carries it.
fn event_of(event: HostEvent) -> Event {
    match event {
        HostEvent::PeerConnected { peer, addr, direction } => {
            Event::PeerConnected { peer, addr, direction }
        }
        HostEvent::PeerIdentified { peer, role, agent, listen_addrs } => {
            Event::PeerIdentified { peer, role, agent, listen_addrs }
        }
        HostEvent::PeerDisconnected { peer, reason } => Event::PeerDisconnected { peer, reason },
        HostEvent::InboundRefused { remote, refusal } => Event::InboundRefused { remote, refusal },
        HostEvent::RemoteError { peer, opcode, status } => {
            Event::RemoteError { peer, opcode, status }
        }
        HostEvent::ProtocolPanicked { protocol, message } => {
            Event::ProtocolPanicked { protocol, message }
        }
        HostEvent::Protocol(event) => Event::Protocol(event),
        HostEvent::AddressesChanged { addrs } => Event::AddressesChanged { addrs },
    }
}
