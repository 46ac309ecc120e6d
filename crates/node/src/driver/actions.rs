//! Turning the peer manager's actions and the connection tasks' events into I/O and callbacks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, Opcode};
use sinew_peers::{Action, ConnId, Reason as PeersReason, RemoteDisconnect};
use sinew_protocol::{PeerInfo, Reason, RequestFailure, Response};
use sinew_transport::{Connection, Incoming};
use sinew_types::PeerId;

use super::Driver;
use super::core::ConnEntry;
use crate::conn::system::SystemQueue;
use crate::conn::{ConnCommand, ConnEvent, ConnTask};
use crate::error::DialError;
use crate::events::Event;
use crate::queue::PeerQueue;
use crate::shared::PeerSlot;
use crate::stats::ConnStats;

/// Commands waiting for a connection task (activate, drain, close: few per connection).
const CONN_COMMAND_CAPACITY: usize = 8;

fn disconnect_code(reason: PeersReason) -> DisconnectCode {
    match reason {
        PeersReason::Shutdown => DisconnectCode::SHUTDOWN,
        PeersReason::Duplicate => DisconnectCode::DUPLICATE,
        PeersReason::Idle => DisconnectCode::IDLE,
        PeersReason::PingTimeout => DisconnectCode::PING_TIMEOUT,
        PeersReason::Unauthorized => DisconnectCode::UNAUTHORIZED,
        PeersReason::Replaced | PeersReason::Restarted => DisconnectCode::REPLACED,
        PeersReason::Removed => DisconnectCode::REMOVED,
        _ => DisconnectCode::PROTOCOL_ERROR,
    }
}

/// The limit a refused inbound connection is told about.
fn refused_limit(refusal: &sinew_peers::Refusal) -> sinew_transport::RefusedLimit {
    use sinew_peers::Refusal;
    use sinew_transport::RefusedLimit;
    match refusal {
        Refusal::Total { .. } => RefusedLimit::Total,
        Refusal::Inbound { .. } => RefusedLimit::Inbound,
        Refusal::PendingHandshakes { .. } | Refusal::PendingPerIp { .. } => {
            RefusedLimit::PendingHandshakes
        }
        Refusal::PerIp { .. } => RefusedLimit::PerIp,
        Refusal::ShuttingDown => RefusedLimit::ShuttingDown,
        _ => RefusedLimit::Other(0),
    }
}

/// Whether a close for this reason delivers what was already written first: every close but
/// those where the remote is unresponsive or not who it should be.
fn graceful(reason: PeersReason) -> bool {
    !matches!(reason, PeersReason::PingTimeout | PeersReason::UnexpectedPeer)
}

impl Driver {
    /// Applies the peer manager's actions. Returns whether there were any.
    pub(super) fn process_peer_actions(&mut self) -> bool {
        let mut any = false;
        while let Some(action) = self.core.peers.poll_action() {
            any = true;
            self.apply(action);
        }
        any
    }

    fn apply(&mut self, action: Action) {
        tracing::debug!(?action, "peer manager");
        match action {
            Action::Dial { conn, addr } => {
                let transport = self.core.shared.transport.clone();
                let tx = self.conn_events_tx.clone();
                let task = tokio::spawn(async move {
                    let result = transport.dial(addr).await.map(Box::new).map_err(Arc::new);
                    let _ = tx.send(ConnEvent::Dialed { conn, result }).await;
                });
                self.core.pending.insert(conn, task.abort_handle());
            }
            Action::Close { conn, reason } => {
                if let Some(entry) = self.core.conns.get(&conn) {
                    entry.command(ConnCommand::Close {
                        code: disconnect_code(reason),
                        message: reason.to_string(),
                        graceful: graceful(reason),
                    });
                } else if let Some(task) = self.core.pending.remove(&conn) {
                    task.abort();
                    self.core.peers.connection_closed(conn, self.core.now);
                }
            }
            Action::Drain { conn } => {
                if let Some(entry) = self.core.conns.get(&conn) {
                    entry.command(ConnCommand::Drain);
                }
            }
            Action::SendPing { conn, nonce } => {
                let id = self.core.shared.next_request_id();
                let frame = Frame::new(
                    Opcode::PING,
                    FrameKind::Request { id },
                    Bytes::copy_from_slice(&nonce.to_le_bytes()),
                );
                // A full system lane drops the ping; the deadline counts it as missed.
                if self.core.send_system(conn, frame).is_ok() {
                    // At most one liveness ping is outstanding per connection.
                    self.core.pings.retain(|(c, _), _| *c != conn);
                    self.core.pings.insert((conn, id), nonce);
                }
            }
            Action::PeerConnected { peer, conn, direction: _ } => self.peer_connected(peer, conn),
            Action::PeerDisconnected { peer, reason } => self.peer_disconnected(peer, reason),
            Action::ConnectionReplaced { peer, old: _, new } => self.activate(peer, new),
            Action::DialSucceeded { conn, peer } => {
                for waiter in self.core.dial_waiters.remove(&conn).unwrap_or_default() {
                    let _ = waiter.send(Ok(peer));
                }
                self.core.dial_errors.remove(&conn);
            }
            Action::DialFailed { conn, addr } => {
                let error = self.core.dial_errors.remove(&conn).unwrap_or(DialError::Closed);
                self.core.shared.emit(Event::DialFailed { addr, error: error.to_string() });
                for waiter in self.core.dial_waiters.remove(&conn).unwrap_or_default() {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
            _ => {}
        }
    }

    /// Makes `conn` the connection carrying `peer`'s queue.
    fn activate(&mut self, peer: PeerId, conn: ConnId) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let queue_bytes = self.core.shared.config.peer_queue_bytes;
        let queue =
            self.core.queues.entry(peer).or_insert_with(|| Arc::new(PeerQueue::new(queue_bytes)));
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
        self.core.shared.peers.write().unwrap_or_else(|e| e.into_inner()).insert(peer, slot);
        if let Some(info) = self.core.info.get_mut(&peer) {
            info.remote_addr = entry.remote_addr.clone();
            info.direction = entry.direction;
        }
    }

    fn peer_connected(&mut self, peer: PeerId, conn: ConnId) {
        let Some(entry) = self.core.conns.get(&conn) else { return };
        let info = PeerInfo {
            peer,
            direction: entry.direction,
            remote_addr: entry.remote_addr.clone(),
            connected_at: self.core.now,
            identity: None,
            authorized: self.core.peers.is_authorized(conn),
        };
        entry.stats.authorized.store(info.authorized, Ordering::Relaxed);
        self.core.info.insert(peer, Box::new(info.clone()));
        if let Err(i) = self.core.connected.binary_search(&peer) {
            self.core.connected.insert(i, peer);
        }
        self.activate(peer, conn);
        self.core.close_reasons.remove(&peer);
        self.call_all(|p, ctx| p.on_peer_connected(ctx, &info));
        self.core.shared.emit(Event::PeerConnected {
            peer,
            addr: info.remote_addr.clone(),
            direction: info.direction,
        });
    }

    fn peer_disconnected(&mut self, peer: PeerId, reason: PeersReason) {
        self.core.info.remove(&peer);
        self.core.connected.retain(|p| *p != peer);
        self.core.shared.peers.write().unwrap_or_else(|e| e.into_inner()).remove(&peer);
        self.core.shared.fail_waiters(&peer);
        let keep_queue = self.core.peers.persistent_peers().contains(&peer)
            && !self.core.peers.is_shutting_down();
        if !keep_queue && let Some(queue) = self.core.queues.remove(&peer) {
            queue.close();
        }
        let observed = self.core.close_reasons.remove(&peer);
        let reason = match reason {
            PeersReason::Shutdown => Reason::Shutdown,
            PeersReason::Idle => Reason::Idle,
            PeersReason::PingTimeout => Reason::PingTimeout,
            PeersReason::Unauthorized => Reason::Unauthorized,
            PeersReason::Replaced | PeersReason::Restarted => Reason::Restarted,
            PeersReason::Removed => Reason::Removed,
            _ => observed.unwrap_or(Reason::ConnectionLost),
        };
        let failed: Vec<u64> =
            self.core.requests.iter().filter(|(_, r)| r.peer == peer).map(|(id, _)| *id).collect();
        for id in failed {
            self.fail_request(id, RequestFailure::Disconnected);
        }
        self.call_all(|p, ctx| p.on_peer_disconnected(ctx, &peer, &reason));
        self.core.shared.emit(Event::PeerDisconnected { peer, reason });
    }

    /// Ends a protocol's request with a failure.
    pub(super) fn fail_request(&mut self, id: u64, failure: RequestFailure) {
        let Some(request) = self.core.requests.remove(&id) else { return };
        self.core.request_deadlines.remove(&(request.deadline, id));
        let response = Response {
            peer: request.peer,
            id: sinew_protocol::RequestId(id),
            opcode: request.opcode,
            result: Err(failure),
        };
        self.call(request.protocol, |p, ctx| p.on_response(ctx, response));
    }

    pub(super) fn handle_conn_event(&mut self, event: ConnEvent) {
        let now = self.core.now;
        match event {
            ConnEvent::Dialed { conn, result } => {
                self.core.pending.remove(&conn);
                match result {
                    Ok(connection) => self.established(conn, *connection),
                    Err(error) => {
                        let failure = super::convert::dial_failure(&error);
                        let error = match &*error {
                            sinew_transport::DialError::Handshake(
                                sinew_transport::HandshakeError::Refused(refused),
                            ) => DialError::Refused {
                                limit: refused.limit,
                                retry_after: refused.retry_after,
                            },
                            _ => DialError::Transport(error),
                        };
                        self.core.dial_errors.insert(conn, error);
                        self.core.peers.dial_failed(conn, failure, now);
                    }
                }
            }
            ConnEvent::Upgraded { conn, remote, result } => {
                self.core.pending.remove(&conn);
                match result {
                    Ok(connection) => self.established(conn, *connection),
                    Err(error) => {
                        self.core.shared.emit(Event::HandshakeFailed { remote, error });
                        self.core.peers.handshake_failed(conn, now);
                    }
                }
            }
            ConnEvent::Frame { conn, frame } => self.on_frame(conn, frame),
            ConnEvent::Goodbye { conn, code } => {
                let kind = if code == DisconnectCode::DUPLICATE {
                    RemoteDisconnect::Duplicate
                } else {
                    RemoteDisconnect::Other
                };
                self.core.peers.disconnect_received(conn, kind, now);
            }
            ConnEvent::Activity { conn, kind } => match kind {
                crate::conn::Activity::Traffic => self.core.peers.activity(conn, now),
                crate::conn::Activity::Streams => {
                    if let Some(entry) = self.core.conns.get(&conn) {
                        let count = entry.stats.open_streams();
                        self.core.peers.streams_open(conn, count, now);
                    }
                }
            },
            ConnEvent::Closed { conn, reason } => {
                if let Some(entry) = self.core.conns.remove(&conn) {
                    self.core.close_reasons.insert(entry.peer, reason);
                }
                self.core.pings.retain(|(c, _), _| *c != conn);
                self.fail_user_pings(|c| c == conn);
                self.core.peers.connection_closed(conn, now);
            }
        }
    }

    /// A connection finished its handshake: start its task, then let the manager decide.
    fn established(&mut self, conn: ConnId, connection: Connection) {
        let pending = self
            .core
            .peers
            .connection(conn)
            .is_some_and(|view| view.state == sinew_peers::ConnState::Pending);
        if !pending || self.shutdown.is_some() {
            // The manager closed it while its handshake finished (a Close raced the result):
            // no task, no zombie. A connection the manager still counts is reported closed.
            let muxer = connection.muxer.clone();
            tokio::spawn(async move { muxer.close().await });
            if self.core.peers.connection(conn).is_some() {
                self.core.peers.connection_closed(conn, self.core.now);
            }
            return;
        }
        let shared = self.core.shared.clone();
        let stats = Arc::new(ConnStats::new(
            shared.epoch,
            shared.config.peers.default_authorized,
            Some((self.conn_events_tx.clone(), conn)),
        ));
        let (commands_tx, commands_rx) = futures::channel::mpsc::channel(CONN_COMMAND_CAPACITY);
        let info = connection.info.clone();
        let muxer = connection.muxer.clone();
        let system = Arc::new(SystemQueue::new(shared.config.system_lane_bytes));
        let task = ConnTask {
            conn,
            peer: info.peer,
            connection,
            shared,
            stats: stats.clone(),
            system: system.clone(),
            to_driver: self.conn_events_tx.clone(),
            commands: commands_rx,
        };
        let task = tokio::spawn(task.run()).abort_handle();
        if info.direction == sinew_types::Direction::Outbound {
            self.core.remember_addr(info.peer, info.remote_addr.clone());
        }
        let established = super::convert::established(&info);
        let entry = ConnEntry {
            peer: info.peer,
            direction: info.direction,
            remote_addr: info.remote_addr,
            commands: commands_tx,
            stats,
            muxer,
            system,
            task,
        };
        self.core.conns.insert(conn, Box::new(entry));
        self.core.peers.handshake_succeeded(conn, established, self.core.now);
    }

    pub(super) fn handle_incoming(&mut self, incoming: Incoming) {
        let remote = incoming.remote_addr;
        match self.core.peers.inbound(remote, self.core.now) {
            Ok(conn) => {
                let tx = self.conn_events_tx.clone();
                let task = tokio::spawn(async move {
                    let result = incoming.upgrade().await.map(Box::new).map_err(|e| e.to_string());
                    let _ = tx.send(ConnEvent::Upgraded { conn, remote, result }).await;
                });
                self.core.pending.insert(conn, task.abort_handle());
            }
            Err(refusal) => {
                // No handshake work: the dialler gets the limit in a refusal record if a slot
                // for that is free, else the socket is just closed.
                match self.core.refusals.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let limit = refused_limit(&refusal);
                        tokio::spawn(async move {
                            incoming.refuse(limit).await;
                            drop(slot);
                        });
                    }
                    Err(_) => drop(incoming),
                }
                self.core
                    .shared
                    .emit(Event::InboundRefused { remote, reason: refusal.to_string() });
            }
        }
    }

    pub(super) fn handle_timeouts(&mut self) {
        let now = self.core.now;
        if self.core.peers.poll_timeout().is_some_and(|at| at <= now) {
            self.core.peers.handle_timeout(now);
        }
        while let Some(&(at, timer, protocol)) = self.core.timers.first() {
            if at > now {
                break;
            }
            self.core.timers.pop_first();
            self.core.timer_at.remove(&timer);
            self.call(protocol, |p, ctx| p.on_timer(ctx, timer));
        }
        while let Some(&(at, id)) = self.core.request_deadlines.first() {
            if at > now {
                break;
            }
            self.fail_request(id, RequestFailure::Timeout);
        }
        while let Some(&(at, conn, id)) = self.core.user_ping_deadlines.first() {
            if at > now {
                break;
            }
            self.core.user_ping_deadlines.pop_first();
            if let Some(ping) = self.core.user_pings.remove(&(conn, id)) {
                let _ = ping.reply.send(Err(crate::RequestError::Timeout));
            }
        }
    }

    /// Fails the application pings of the connections `which` picks.
    pub(super) fn fail_user_pings(&mut self, which: impl Fn(ConnId) -> bool) {
        let ids: Vec<(ConnId, u64)> =
            self.core.user_pings.keys().filter(|(c, _)| which(*c)).copied().collect();
        for key in ids {
            if let Some(ping) = self.core.user_pings.remove(&key) {
                self.core.user_ping_deadlines.remove(&(ping.deadline, key.0, key.1));
                let _ = ping.reply.send(Err(crate::RequestError::Disconnected));
            }
        }
    }

    /// Closes the connections whose remote asked faster than it read the answers.
    pub(super) fn close_flooded(&mut self) -> bool {
        let flooded = std::mem::take(&mut self.core.flooded);
        let any = !flooded.is_empty();
        for conn in flooded {
            if let Some(entry) = self.core.conns.get(&conn) {
                tracing::debug!(%conn, "system lane overflowed: closing for flooding");
                entry.command(ConnCommand::Close {
                    code: DisconnectCode::FLOODING,
                    message: "requests came faster than their answers were read".into(),
                    graceful: false,
                });
            }
        }
        any
    }
}
