//! sinew's [`Muxer`] over a quinn [`Connection`]: QUIC's own streams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// The stream credit a connection starts with: how many bidirectional streams the remote may
/// open at once before [`muxed`] raises it (see [`StreamCredit`]).
pub const INITIAL_STREAM_CREDIT: u32 = 24;

/// The credit is raised when fewer than this many streams remain between the inbound streams
/// held open and the credit granted: [`STREAM_SLACK`], so that streams refused, or dropped but
/// not yet closed on the wire (which quinn still counts), do not hold up new ones.
pub const STREAM_CREDIT_HEADROOM: u32 = STREAM_SLACK;

/// How much each raise adds to the credit (up to [`quinn_stream_limit`]).
pub const STREAM_CREDIT_STEP: u32 = 16;

/// The bidirectional stream credit a connection's transport configuration starts with:
/// [`INITIAL_STREAM_CREDIT`], or [`quinn_stream_limit`] if that is lower.
///
/// quinn keeps a map entry per stream the remote may open, made when the credit is granted:
/// with the full 80 streams of the default limits, 5.3 KiB per idle connection endpoint
/// (two 128-bucket maps); with 24, 1.4 KiB. The credit grows with use instead.
///
/// ```
/// use sinew_transport::StreamLimits;
/// assert_eq!(sinew_quic::initial_stream_credit(StreamLimits::default()), 24);
/// assert_eq!(sinew_quic::initial_stream_credit(StreamLimits { inbound: 2, outbound: 2 }), 18);
/// ```
pub fn initial_stream_credit(limits: StreamLimits) -> u32 {
    INITIAL_STREAM_CREDIT.min(quinn_stream_limit(limits))
}

/// quinn's stream credit for the remote on one connection, raised as inbound streams are held
/// open: when the streams accepted and not yet dropped come within [`STREAM_CREDIT_HEADROOM`]
/// of the credit, it grows by [`STREAM_CREDIT_STEP`], up to [`quinn_stream_limit`]. It never
/// shrinks (nor do quinn's maps). A remote opening more at once than the headroom waits one
/// round trip for the new credit (QUIC flow control: its `open` waits, nothing fails).
#[derive(Debug)]
pub(crate) struct StreamCredit {
    /// Inbound streams accepted and not yet dropped.
    open: AtomicUsize,
    /// The credit granted so far.
    granted: Mutex<u32>,
    /// The most it may grow to.
    max: u32,
}

impl StreamCredit {
    fn new(limits: StreamLimits) -> Self {
        Self {
            open: AtomicUsize::new(0),
            granted: Mutex::new(initial_stream_credit(limits)),
            max: quinn_stream_limit(limits),
        }
    }

    /// One more inbound stream is held: raises the credit if it is running out.
    fn accepted(&self, connection: &Connection) {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let open = u32::try_from(open).unwrap_or(u32::MAX);
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if open.saturating_add(STREAM_CREDIT_HEADROOM) > *granted && *granted < self.max {
            *granted = granted.saturating_add(STREAM_CREDIT_STEP).min(self.max);
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(*granted));
        }
    }

    /// An inbound stream was dropped.
    pub(crate) fn released(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wraps an established quinn connection as a [`MuxedConnection`] enforcing `limits`.
///
/// The connection's transport configuration should start the remote's bidirectional stream
/// credit at [`initial_stream_credit`]`(limits)` (the transport's
/// [`QuicConfig`](crate::QuicConfig) does); it is raised as streams are used, up to
/// [`quinn_stream_limit`]`(limits)`.
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
    let credit = Arc::new(StreamCredit::new(limits));
    MuxedConnection::new(QuicMuxer { connection, close_timeout, in_flight, credit }, limits)
}

/// The [`Muxer`] over one quinn connection.
struct QuicMuxer {
    connection: Connection,
    close_timeout: Duration,
    /// Finished streams whose data is not acknowledged yet.
    in_flight: Arc<InFlight>,
    /// The remote's stream credit.
    credit: Arc<StreamCredit>,
}

impl Muxer for QuicMuxer {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn StreamIo>, StreamError>> {
        Box::pin(async move {
            // quinn waits here while the remote's stream limit is used up; the remote learns of
            // the stream when its first bytes arrive.
            let (send, recv) =
                self.connection.open_bi().await.map_err(|_| StreamError::ConnectionClosed)?;
            let in_flight = Arc::clone(&self.in_flight);
            Ok(Box::new(QuicStream::new(send, recv, in_flight, None)) as Box<dyn StreamIo>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Box<dyn StreamIo>>> {
        Box::pin(async move {
            let (send, recv) = self.connection.accept_bi().await.ok()?;
            self.credit.accepted(&self.connection);
            let in_flight = Arc::clone(&self.in_flight);
            let credit = Some(Arc::clone(&self.credit));
            Some(Box::new(QuicStream::new(send, recv, in_flight, credit)) as Box<dyn StreamIo>)
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
