//! The node's own protocols: inboxes, ordinary [`Protocol`](sinew_protocol::Protocol)s run by
//! the host like everyone else's. (Ping, keepalive and identify live in `sinew-host`.)

mod inbox;

pub use inbox::Inbox;
pub(crate) use inbox::InboxProtocol;
