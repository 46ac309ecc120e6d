//! sinew's [`Muxer`] over a quinn [`Connection`]: QUIC's own streams.

use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, VarInt};

use crate::stream::InFlight;
use sinew_transport::{BoxFuture, MuxedConnection, Muxer, StreamError, StreamIo, StreamLimits};

use crate::stream::QuicStream;

/// The QUIC application error code of `CONNECTION_CLOSE` when sinew closes a connection
/// ([`MuxedConnection::close`], or dropping every handle): a normal close.
pub const CLOSE_CODE: u32 = 0;

/// How many streams quinn lets the remote open beyond sinew's inbound limit (see
/// [`quinn_stream_limit`]).
pub const STREAM_SLACK: u32 = 16;

/// The number of concurrent bidirectional streams quinn lets the remote open:
/// `limits.inbound` plus [`STREAM_SLACK`].
///
/// sinew's limit must be the one that bites: [`MuxedConnection::accept_stream`] resets and
/// counts a stream over it. quinn's limit is only flow control (the remote's `open_bi` waits
/// for credit, it never kills the connection), and the slack lets streams just refused, or just
/// dropped by the application but not yet fully closed on the wire, not hold up new ones.
///
/// ```
/// use sinew_transport::StreamLimits;
/// assert_eq!(sinew_quic::quinn_stream_limit(StreamLimits::default()), 64 + 16);
/// ```
pub fn quinn_stream_limit(limits: StreamLimits) -> u32 {
    u32::try_from(limits.inbound).unwrap_or(u32::MAX).saturating_add(STREAM_SLACK)
}

/// Wraps an established quinn connection as a [`MuxedConnection`] enforcing `limits`.
///
/// The connection's transport configuration should allow at least
/// [`quinn_stream_limit`]`(limits)` concurrent bidirectional streams (the transport's
/// [`QuicConfig`](crate::QuicConfig) does).
///
/// [`MuxedConnection::close`] first waits, up to `close_timeout`, for what finished streams
/// still have in flight to be acknowledged (QUIC's close discards unsent data, where yamux
/// flushes before its GoAway), then closes and waits, up to `close_timeout` again, for quinn to
/// report the connection closed.
///
/// Dropping every clone of the returned connection closes the QUIC connection (with
/// [`CLOSE_CODE`]), even while streams are still open.
pub fn muxed(
    connection: Connection,
    limits: StreamLimits,
    close_timeout: Duration,
) -> MuxedConnection {
    let in_flight = Arc::new(InFlight::default());
    MuxedConnection::new(QuicMuxer { connection, close_timeout, in_flight }, limits)
}

/// The [`Muxer`] over one quinn connection.
struct QuicMuxer {
    connection: Connection,
    close_timeout: Duration,
    /// Finished streams whose data is not acknowledged yet.
    in_flight: Arc<InFlight>,
}

impl Muxer for QuicMuxer {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn StreamIo>, StreamError>> {
        Box::pin(async move {
            // quinn waits here while the remote's stream limit is used up; the remote learns of
            // the stream when its first bytes arrive.
            let (send, recv) =
                self.connection.open_bi().await.map_err(|_| StreamError::ConnectionClosed)?;
            let in_flight = Arc::clone(&self.in_flight);
            Ok(Box::new(QuicStream::new(send, recv, in_flight)) as Box<dyn StreamIo>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Box<dyn StreamIo>>> {
        Box::pin(async move {
            let (send, recv) = self.connection.accept_bi().await.ok()?;
            let in_flight = Arc::clone(&self.in_flight);
            Some(Box::new(QuicStream::new(send, recv, in_flight)) as Box<dyn StreamIo>)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(self.close_timeout, self.in_flight.drained()).await;
            self.connection.close(VarInt::from_u32(CLOSE_CODE), b"closed");
            let _ = tokio::time::timeout(self.close_timeout, self.connection.closed()).await;
        })
    }

    fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }
}

impl Drop for QuicMuxer {
    fn drop(&mut self) {
        // Like yamux: the last handle closes the connection, whatever streams are still open.
        self.connection.close(VarInt::from_u32(CLOSE_CODE), b"dropped");
    }
}
