//! What connection tasks and listeners report, handed to the host.

use std::sync::Arc;

use sinew_host::Lane;
use sinew_peers::ConnId;
use sinew_transport::{Connection, Incoming};

use super::{ConnEntry, Driver, now};
use crate::conn::system::SystemQueue;
use crate::conn::{Activity, ConnEvent, ConnTask};
use crate::error::DialError;
use crate::events::Event;
use crate::stats::ConnStats;

/// Commands waiting for a connection task (activate, drain, close: few per connection).
const CONN_COMMAND_CAPACITY: usize = 8;

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

impl Driver {
    pub(super) fn handle_conn_event(&mut self, event: ConnEvent) {
        let now = now();
        match event {
            ConnEvent::Dialed { conn, result } => {
                self.pending.remove(&conn);
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
                        // Kept for the host's verdict, unless the host gave the dial up already
                        // (then no verdict follows).
                        if self.host.manager().connection(conn).is_some() {
                            self.dial_errors.insert(conn, error);
                        }
                        self.host.handle_dial_failed(conn, failure, now);
                    }
                }
            }
            ConnEvent::Upgraded { conn, remote, result } => {
                self.pending.remove(&conn);
                match result {
                    Ok(connection) => self.established(conn, *connection),
                    Err(error) => {
                        self.shared.emit(Event::HandshakeFailed { remote, error });
                        self.host.handle_handshake_failed(conn, now);
                    }
                }
            }
            ConnEvent::Frame { conn, frame } => self.host.handle_frame(conn, frame, now),
            ConnEvent::Goodbye { conn, code } => self.host.handle_goodbye(conn, code, now),
            ConnEvent::TransferStarted { conn, start } => {
                self.host.handle_transfer_started(conn, start, now)
            }
            ConnEvent::Activity { conn, kind } => match kind {
                Activity::Traffic => self.host.handle_activity(conn, now),
                Activity::Streams => {
                    if let Some(entry) = self.conns.get(&conn) {
                        let count = entry.stats.open_streams();
                        self.host.handle_streams(conn, count, now);
                    }
                }
                Activity::Written => {
                    if let Some(entry) = self.conns.get(&conn) {
                        let (system, protocol) = entry.stats.take_written();
                        self.host.handle_write_credit(conn, Lane::System, system);
                        self.host.handle_write_credit(conn, Lane::Message, protocol);
                    }
                }
            },
            ConnEvent::Closed { conn, reason } => {
                if let Some(entry) = self.conns.remove(&conn) {
                    // What it wrote and had not reported yet (its protocol frames' credit is
                    // the peer's, and outlives the connection).
                    let (system, protocol) = entry.stats.take_written();
                    self.host.handle_write_credit(conn, Lane::System, system);
                    self.host.handle_write_credit(conn, Lane::Message, protocol);
                }
                self.host.handle_closed(conn, reason, now);
            }
        }
    }

    /// A connection finished its handshake: start its task if the host still wants it.
    fn established(&mut self, conn: ConnId, connection: Connection) {
        let established = super::convert::established(&connection.info);
        if self.shutdown.is_some() || !self.host.handle_established(conn, established, now()) {
            // The host closed it while its handshake finished (a Close raced the result): no
            // task, no zombie.
            let muxer = connection.muxer.clone();
            tokio::spawn(async move { muxer.close().await });
            return;
        }
        let shared = self.shared.clone();
        let stats = Arc::new(ConnStats::new(
            shared.epoch,
            shared.config.peers.default_authorized,
            Some((self.conn_events_tx.clone(), conn)),
        ));
        let (commands_tx, commands_rx) = futures::channel::mpsc::channel(CONN_COMMAND_CAPACITY);
        let peer = connection.info.peer;
        let security = connection.info.security;
        let muxer = connection.muxer.clone();
        let system = Arc::new(SystemQueue::new(shared.config.system_lane_bytes));
        let task = ConnTask {
            conn,
            peer,
            connection,
            shared,
            stats: stats.clone(),
            system: system.clone(),
            to_driver: self.conn_events_tx.clone(),
            commands: commands_rx,
        };
        let task = tokio::spawn(task.run()).abort_handle();
        let entry = ConnEntry { commands: commands_tx, stats, muxer, system, task, security };
        self.conns.insert(conn, Box::new(entry));
    }

    pub(super) fn handle_incoming(&mut self, incoming: Incoming) {
        let remote = incoming.remote_addr;
        match self.host.handle_inbound(remote, now()) {
            Ok(conn) => {
                let tx = self.conn_events_tx.clone();
                let task = tokio::spawn(async move {
                    let result = incoming.upgrade().await.map(Box::new).map_err(Arc::new);
                    let _ = tx.send(ConnEvent::Upgraded { conn, remote, result }).await;
                });
                self.pending.insert(conn, task.abort_handle());
            }
            Err(refusal) => {
                // No handshake work: the dialler gets the limit in a refusal record if a slot
                // for that is free, else the socket is just closed.
                match self.refusals.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let limit = refused_limit(&refusal);
                        tokio::spawn(async move {
                            incoming.refuse(limit).await;
                            drop(slot);
                        });
                    }
                    Err(_) => drop(incoming),
                }
            }
        }
    }
}
