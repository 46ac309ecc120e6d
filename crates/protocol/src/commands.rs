//! Reaching a protocol from the application: typed commands in, typed answers out, and a feed
//! of notices the other way.

use std::any::Any;

use sinew_types::PeerId;

use crate::{
    Ctx, DialOutcome, Handled, Message, Opcodes, PeerInfo, Protocol, Reason, Response, TimerId,
};

/// A protocol the application can talk to. Register it wrapped in [`WithCommands`] (the node's
/// `register_with_handle` does that): the handle it returns sends a [`Commands::Command`],
/// which runs in the host like any callback, and returns its [`Commands::Answer`]. The
/// protocol feeds the application [`Commands::Notice`]s with [`Ctx::notify`]; the application
/// reads them from a bounded stream that drops the oldest and says how many it dropped.
///
/// ```
/// use sinew_protocol::{Commands, Ctx, Opcodes, Protocol};
///
/// /// Counts what the application asks it to count.
/// struct Counter(u64);
/// impl Protocol for Counter {
///     fn opcodes(&self) -> Opcodes {
///         Opcodes::none()
///     }
/// }
/// impl Commands for Counter {
///     type Command = u64;
///     type Answer = u64;
///     type Notice = u64;
///     fn on_command(&mut self, ctx: &mut Ctx<'_>, add: u64) -> u64 {
///         self.0 += add;
///         ctx.notify(self.0);
///         self.0
///     }
/// }
/// ```
pub trait Commands: Protocol {
    /// What the application asks.
    type Command: Send + 'static;
    /// What the protocol answers.
    type Answer: Send + 'static;
    /// What the protocol tells the application unasked ([`Ctx::notify`]).
    type Notice: Send + 'static;

    /// Handles one command, like any other callback (it must return quickly).
    fn on_command(&mut self, ctx: &mut Ctx<'_>, command: Self::Command) -> Self::Answer;
}

/// A command or answer on its way through the host, its type erased.
pub type Erased = Box<dyn Any + Send>;

/// A [`Commands`] protocol as the host runs it: every callback goes to the protocol, and
/// commands arrive type-erased ([`Protocol::on_erased_command`]).
#[derive(Debug)]
pub struct WithCommands<P>(pub P);

impl<P: Commands> Protocol for WithCommands<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn opcodes(&self) -> Opcodes {
        self.0.opcodes()
    }
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_start(ctx);
    }
    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        self.0.on_peer_connected(ctx, peer);
    }
    fn on_peer_identified(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        self.0.on_peer_identified(ctx, peer);
    }
    fn on_peer_disconnected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerId, reason: &Reason) {
        self.0.on_peer_disconnected(ctx, peer, reason);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        self.0.on_message(ctx, msg)
    }
    fn on_response(&mut self, ctx: &mut Ctx<'_>, response: Response) {
        self.0.on_response(ctx, response);
    }
    fn on_addresses_changed(&mut self, ctx: &mut Ctx<'_>, addrs: &[sinew_types::Addr]) {
        self.0.on_addresses_changed(ctx, addrs);
    }
    fn on_dial_outcome(&mut self, ctx: &mut Ctx<'_>, outcome: &DialOutcome) {
        self.0.on_dial_outcome(ctx, outcome);
    }
    fn on_transfer_started(&mut self, ctx: &mut Ctx<'_>, transfer: &crate::TransferStart) {
        self.0.on_transfer_started(ctx, transfer);
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: TimerId) {
        self.0.on_timer(ctx, timer);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, peer: &PeerId) {
        self.0.on_writable(ctx, peer);
    }
    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_stop(ctx);
    }
    fn on_erased_command(&mut self, ctx: &mut Ctx<'_>, command: Erased) -> Result<Erased, Erased> {
        match command.downcast::<P::Command>() {
            Ok(command) => Ok(Box::new(self.0.on_command(ctx, *command))),
            Err(other) => Err(other),
        }
    }
}
