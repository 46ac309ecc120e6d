//! The node's event stream.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use sinew_codec::{Opcode, Status};
use sinew_protocol::{ProtocolEvent, Reason};
use sinew_types::{Addr, Direction, PeerId};
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

/// Something that happened on the node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A listener is bound.
    Listening {
        /// The bound address (with the real port).
        addr: Addr,
    },
    /// The addresses this node advertises changed (a listener, or a port mapping).
    AddressesChanged {
        /// The advertised addresses now.
        addrs: Vec<Addr>,
    },
    /// A peer connected (its first connection was established).
    PeerConnected {
        /// Who.
        peer: PeerId,
        /// Its address as we see it.
        addr: Addr,
        /// Who dialled.
        direction: Direction,
    },
    /// A peer's identify arrived.
    PeerIdentified {
        /// Who.
        peer: PeerId,
        /// Its role.
        role: String,
        /// Its agent string.
        agent: String,
        /// The addresses it listens on.
        listen_addrs: Vec<Addr>,
    },
    /// A peer disconnected (its last connection closed).
    PeerDisconnected {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: Reason,
    },
    /// A dial failed.
    DialFailed {
        /// The address dialled.
        addr: Addr,
        /// Why.
        error: crate::DialError,
    },
    /// An inbound connection was refused before its handshake (a connection limit).
    InboundRefused {
        /// The remote socket.
        remote: SocketAddr,
        /// Which limit.
        refusal: sinew_peers::Refusal,
    },
    /// An inbound handshake failed (garbage, wrong protocol, timeout...). The listener goes on.
    HandshakeFailed {
        /// The remote socket.
        remote: SocketAddr,
        /// Why.
        error: std::sync::Arc<sinew_transport::UpgradeError>,
    },
    /// A message was dropped: an inbox or a queue was full.
    MessageDropped {
        /// The peer it came from or was for.
        peer: PeerId,
        /// Its opcode.
        opcode: Opcode,
        /// Why.
        reason: DropReason,
    },
    /// A peer answered a one-way message with an error (e.g. unknown opcode).
    RemoteError {
        /// Who.
        peer: PeerId,
        /// The opcode of our message.
        opcode: Opcode,
        /// The status.
        status: Status,
    },
    /// An event from a protocol.
    Protocol(ProtocolEvent),
    /// A protocol panicked in one of its callbacks: it was removed (its opcodes are unhandled
    /// from now on, and its `on_stop` was not called); the node and its other protocols go on.
    ProtocolPanicked {
        /// The protocol's name.
        protocol: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Port mapping: a gateway found or not, a mapping made, renewed or lost, the external
    /// address, a double NAT, a gateway restart.
    Nat(std::sync::Arc<sinew_nat::NatEvent>),
    /// This subscriber was too slow and missed `missed` events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The application inbox was full.
    InboxFull,
    /// The peer's outbound queue was full (broadcast or a protocol's try_send).
    QueueFull,
    /// The stream handler's queue was full or no handler was registered.
    NoStreamHandler,
    /// A large message claimed more than the node's budget or a connection's share.
    TooLarge,
    /// A large message's next bytes did not fit the node's receive budget (or the
    /// connection's share of it): its stream was reset.
    BudgetExhausted,
    /// A large message arrived slower than `NodeConfig::large_min_rate`: its stream was reset.
    TooSlow,
    /// The protocol owning its opcode cancelled the large message (`Ctx::cancel_transfer`).
    Cancelled,
}

/// A subscription to the node's events (see [`crate::Node::events`]).
///
/// Bounded: a subscriber that falls more than the event capacity behind skips the oldest events
/// and receives one [`Event::Lagged`] saying how many it missed.
///
/// Also a [`futures::Stream`] of events, which ends once the node has shut down.
pub struct Events {
    /// The receive in progress; it owns the receiver and hands it back with each event.
    recv: ReusableBoxFuture<'static, Received>,
}

type Received = (Result<Event, broadcast::error::RecvError>, broadcast::Receiver<Event>);

async fn receive(mut rx: broadcast::Receiver<Event>) -> Received {
    let result = rx.recv().await;
    (result, rx)
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Self { recv: ReusableBoxFuture::new(receive(rx)) }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let (result, rx) = std::task::ready!(self.recv.poll(cx));
        self.recv.set(receive(rx));
        Poll::Ready(match result {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        })
    }

    /// The next event; `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting now.
    pub fn try_next(&mut self) -> Option<Event> {
        let waker = futures::task::noop_waker();
        match self.poll_event(&mut Context::from_waker(&waker)) {
            Poll::Ready(event) => event,
            Poll::Pending => None,
        }
    }

    /// Waits up to `timeout` for the first event for which `pick` returns `Some`, skipping the
    /// others. Handy in tests and scripts.
    pub async fn wait_for<T>(
        &mut self,
        timeout: std::time::Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.next().await {
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}
