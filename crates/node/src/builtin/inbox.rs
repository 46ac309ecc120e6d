//! Application inboxes: messages for a set of opcodes, delivered to a bounded channel.

use std::sync::Arc;

use sinew_codec::Status;
use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol};
use tokio::sync::mpsc;

use crate::events::{DropReason, Event};
use crate::shared::Shared;

/// Receives the messages, acked messages and requests for an application's opcodes (see
/// [`crate::Node::inbox`]). Answer requests with [`crate::Node::reply`].
///
/// Bounded by the node's inbox capacity. When it is full, a new message is dropped and an
/// [`Event::MessageDropped`] is emitted; a request or acked message is also answered with
/// [`Status::BUSY`], so its sender learns at once. Nothing blocks the node.
#[derive(Debug)]
pub struct Inbox {
    pub(crate) rx: mpsc::Receiver<Message>,
}

impl Inbox {
    /// The next message; `None` once the node shut down or the inbox was unregistered.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

/// The protocol behind an [`Inbox`].
pub(crate) struct InboxProtocol {
    pub(crate) opcodes: Opcodes,
    pub(crate) tx: mpsc::Sender<Message>,
    pub(crate) shared: Arc<Shared>,
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
        match self.tx.try_send(msg) {
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
