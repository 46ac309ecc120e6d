//! yamux stream multiplexing behind sinew's [`MuxedConnection`].
//!
//! [`yamux()`] turns one byte stream (a Noise-secured TCP connection, or anything tokio
//! `AsyncRead + AsyncWrite`) into a [`MuxedConnection`]: many independent streams, with sinew's
//! per-direction [`StreamLimits`](sinew_transport::StreamLimits) enforced above yamux.
//!
//! # I/O contract
//!
//! yamux 0.14 is poll-based and one call, `poll_next_inbound`, reads and writes the socket for
//! every stream. So [`yamux()`] spawns **one driver task per connection** (`tokio::spawn`; call it
//! inside a tokio runtime with timers enabled) that owns the yamux connection and polls it for as
//! long as it lives. The handle inside the [`MuxedConnection`] talks to it only through:
//!
//! - **open requests**: a channel of one-shot reply senders, with one slot per waiting `open`
//!   (there are at most as many as the outbound stream limit, which `open_stream` enforces
//!   first). The driver serves one request at a time (yamux may make it wait while 256 of our
//!   streams are not yet acknowledged by the remote); an opener that gave up is skipped.
//! - **inbound streams**: a bounded queue of [`YamuxConfig::inbound_queue`] streams towards
//!   `accept`. When it is full, a new inbound stream is reset at once and counted
//!   ([`YamuxStats::queue_full_resets`]): the driver never waits for the application. Streams
//!   over the inbound limit are reset by [`MuxedConnection::accept_stream`] and counted in
//!   [`MuxedConnection::refused_inbound`].
//! - **close**: a flag and a waker; never blocks. [`MuxedConnection::close`] sets it and waits
//!   for the driver to end, which sends yamux's GoAway and closes the socket within
//!   [`YamuxConfig::close_timeout`] (then drops it regardless). Dropping every clone of the
//!   [`MuxedConnection`] closes the same way.
//!
//! When the driver ends (closed by either side, or failed), `is_closed` turns true, then `accept`
//! returns `None` (streams still queued are not handed out) and opens fail with
//! [`StreamError::ConnectionClosed`](sinew_transport::StreamError).
//!
//! # Streams
//!
//! - The opener writes first: yamux announces a stream with its first frame.
//! - `poll_shutdown` ([`Stream::finish`](sinew_transport::Stream::finish)) sends FIN after the
//!   data already written; the remote reads EOF and can keep writing its half.
//! - Dropping a stream without finishing resets it. yamux reports a reset to the remote's reader
//!   as end of stream (it cannot be told apart from FIN when reading), and the remote's writes
//!   fail from then on. A stream the remote refuses (over its inbound limit or queue) looks the
//!   same to its opener, so application protocols should frame their messages (a length or an
//!   explicit end) rather than trust EOF alone.
//! - When the connection ends, what was received stays readable, then reads end (EOF, or an
//!   error after a local close) and writes fail.
//!
//! # Settings
//!
//! yamux closes the whole connection when its own stream limit is passed in either direction,
//! so [`YamuxConfig`] derives yamux's limit from sinew's limits with room to spare
//! ([`YamuxConfig::yamux_max_streams`]) and raises the connection window to what that limit
//! needs ([`YamuxConfig::yamux_window`]). Frames are 256 KiB by default
//! ([`YamuxConfig::split_send_size`]).
//!
//! The remote frees an inbound slot when its application drops the stream, which can be a
//! moment after we have read its FIN and reused our outbound slot: give inbound limits some
//! headroom over what peers open, or a promptly reused slot can be refused.
//!
//! One known gap: a dropped stream stays in yamux's table until what it had queued has been
//! written to the socket. An application that opens, writes to and drops streams much faster
//! than the remote reads can fill the table's slack, and yamux then closes the connection.
//!
//! # Memory
//!
//! An idle connection with one idle stream costs about 2.6 KiB of heap per endpoint (measured by
//! `tests/memory.rs`): about 1.7 KiB for the connection (the driver task, about 0.7 KiB with
//! yamux's connection state inline; yamux's own allocations, 320 bytes; the two channels, 176
//! bytes each; the end signal; the [`MuxedConnection`]) and 0.9 KiB per idle stream (yamux's
//! per-stream state and command channel, and the wrapper). No buffer is kept while idle.
//!
//! # Example
//!
//! ```
//! use sinew_mux::{YamuxConfig, yamux};
//! use sinew_transport::Direction;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let config = YamuxConfig::default();
//! let dialer = yamux(a, Direction::Outbound, &config);
//! let listener = yamux(b, Direction::Inbound, &config);
//!
//! let mut out = dialer.open_stream().await?;
//! out.write_all(b"ping").await?; // the opener writes first
//! out.finish().await?;
//!
//! let mut inc = listener.accept_stream().await.expect("a stream");
//! let mut got = Vec::new();
//! inc.read_to_end(&mut got).await?; // up to the FIN
//! assert_eq!(got, b"ping");
//! inc.write_all(b"pong").await?;
//! inc.finish().await?;
//!
//! let mut reply = Vec::new();
//! out.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"pong");
//!
//! dialer.close().await;
//! assert!(dialer.is_closed());
//! assert!(listener.accept_stream().await.is_none()); // the remote closed
//! assert!(listener.is_closed());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod driver;
mod gate;
mod muxer;
mod stream;
mod window;

use std::sync::Arc;

use futures::channel::mpsc;
use sinew_transport::{Direction, MuxedConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

pub use config::{MAX_SPLIT_SEND_SIZE, STREAM_SLACK, YAMUX_STREAM_WINDOW, YamuxConfig};
pub use muxer::YamuxStats;
pub use window::WindowBudget;

use driver::{Driver, Shared};
use muxer::YamuxMuxer;

/// Multiplexes `io` with yamux and spawns its driver task (see the crate documentation).
///
/// `direction` picks the yamux role: [`Direction::Outbound`] (we dialled) is the client, which
/// numbers its streams odd; [`Direction::Inbound`] is the server. The two ends must differ.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn yamux<S>(io: S, direction: Direction, config: &YamuxConfig) -> MuxedConnection
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    yamux_with_stats(io, direction, config).0
}

/// [`yamux()`], also returning the connection's [`YamuxStats`].
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn yamux_with_stats<S>(
    io: S,
    direction: Direction,
    config: &YamuxConfig,
) -> (MuxedConnection, YamuxStats)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mode = match direction {
        Direction::Outbound => yamux::Mode::Client,
        Direction::Inbound => yamux::Mode::Server,
    };
    let shared = Arc::new(Shared::new(config.write_queue));
    let (open_tx, open_rx) = mpsc::channel(0);
    // A futures channel holds `buffer` messages plus one per sender (the driver).
    let (inbound_tx, inbound_rx) = mpsc::channel(config.queue_capacity() - 1);
    // The window growth above yamux's guaranteed floor, capped by the node-wide budget.
    let floor = config.yamux_window_floor();
    let wanted = config.yamux_window() - floor;
    let grant = config.window_budget.as_ref().map(|budget| budget.grant(wanted));
    let window = floor + grant.as_ref().map_or(wanted, |g| g.bytes);
    shared.window.store(window, std::sync::atomic::Ordering::Relaxed);
    let io = gate::Counted::new(io, Arc::clone(&shared.gate), Arc::clone(&shared.priority_ids));
    let conn = yamux::Connection::new(io.compat(), config.to_yamux(window), mode);
    let driver = Driver::new(conn, Arc::clone(&shared), open_rx, inbound_tx, config.close_timeout);
    tokio::spawn(driver.with_grant(grant));
    let muxer =
        YamuxMuxer { shared: Arc::clone(&shared), opens: open_tx, inbound: Mutex::new(inbound_rx) };
    (MuxedConnection::new(muxer, config.limits), YamuxStats { shared })
}
