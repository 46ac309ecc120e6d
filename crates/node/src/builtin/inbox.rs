//! Application inboxes: messages for a set of opcodes, delivered to a bounded channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sinew_codec::Status;
use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol};
use tokio::sync::mpsc;

use crate::events::{DropReason, Event};
use crate::shared::Shared;

/// Receives the messages, acked messages and requests for an application's opcodes (see
/// [`crate::Node::inbox`]). Answer requests with [`crate::Node::reply`].
///
/// Bounded by the node's inbox capacity (messages) and inbox bytes (the payloads of messages
/// that came on the message lane; large messages are bounded by the large-message budget). When
/// it is full, a new message is dropped and an [`Event::MessageDropped`] is emitted; a request
/// or acked message is also answered with [`Status::BUSY`], so its sender learns at once.
/// Nothing blocks the node. Also a [`futures::Stream`] of messages.
#[derive(Debug)]
pub struct Inbox {
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) bytes: Arc<AtomicUsize>,
}

impl Inbox {
    /// The next message; `None` once the node shut down or the inbox was unregistered.
    pub async fn next(&mut self) -> Option<Message> {
        let msg = self.rx.recv().await?;
        self.bytes.fetch_sub(counted(&msg), Ordering::Relaxed);
        Some(msg)
    }

    /// The next message if one is waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        let msg = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(counted(&msg), Ordering::Relaxed);
        Some(msg)
    }
}

impl futures::Stream for Inbox {
    type Item = Message;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        let this = self.get_mut();
        let msg = std::task::ready!(this.rx.poll_recv(cx));
        if let Some(msg) = &msg {
            this.bytes.fetch_sub(counted(msg), Ordering::Relaxed);
        }
        std::task::Poll::Ready(msg)
    }
}

/// The bytes of `msg` the inbox's byte bound counts: its payload if it came on the message lane
/// (at most the 1 MiB cap); large messages hold the large-message budget instead.
fn counted(msg: &Message) -> usize {
    let len = msg.payload.len();
    if len <= sinew_codec::DEFAULT_CONTROL_CAP { len } else { 0 }
}

/// The protocol behind an [`Inbox`].
pub(crate) struct InboxProtocol {
    pub(crate) opcodes: Opcodes,
    pub(crate) tx: mpsc::Sender<Message>,
    pub(crate) shared: Arc<Shared>,
    /// Bytes waiting in the inbox (see [`counted`]).
    pub(crate) bytes: Arc<AtomicUsize>,
}

impl Protocol for InboxProtocol {
    fn name(&self) -> &'static str {
        "inbox"
    }

    fn opcodes(&self) -> Opcodes {
        self.opcodes.clone()
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        let (peer, opcode, kind) = (msg.peer, msg.opcode, msg.kind);
        let len = counted(&msg);
        let queued = self.bytes.load(Ordering::Relaxed);
        let over = queued > 0 && queued + len > self.shared.config.inbox_bytes;
        let sent = if over {
            Err(mpsc::error::TrySendError::Full(msg))
        } else {
            // Counted before it can be taken, so the taker never subtracts first.
            self.bytes.fetch_add(len, Ordering::Relaxed);
            self.tx.try_send(msg).inspect_err(|_| {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
            })
        };
        match sent {
            Ok(()) => Handled::Yes,
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.shared.emit(Event::MessageDropped {
                    peer,
                    opcode,
                    reason: DropReason::InboxFull,
                });
                if kind.id().is_some() {
                    let _ = ctx.reply_error(&msg, Status::BUSY);
                }
                // Answered (busy) or dropped on purpose: not an unknown opcode.
                Handled::Yes
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Handled::No,
        }
    }
}
