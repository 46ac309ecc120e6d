//! A byte stream over WebSocket binary messages: [`WsStream`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::ProtocolError};

/// Limits and batching of a [`WsStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsStreamConfig {
    /// The largest message accepted from the peer (1 MiB). A larger one is an `InvalidData`
    /// error that closes the connection (close code 1009).
    pub max_message_size: usize,
    /// The largest frame accepted from the peer (1 MiB), checked on the frame header before the
    /// payload is read.
    pub max_frame_size: usize,
    /// Writes are coalesced into one binary message of at most this many bytes (256 KiB), sent
    /// on `poll_flush` or when the batch is full. Keep it at or below the peer's
    /// `max_message_size`.
    pub write_batch: usize,
    /// How much tungstenite reads from the socket at a time (16 KiB). Its read buffer starts at
    /// this size and is kept for the connection's life: at 64 KiB an idle ws+noise connection
    /// endpoint held 71 KiB, at 16 KiB it holds 23 KiB, for the same bulk throughput (8 KiB
    /// cost 14 % more CPU; `farm-bench` of the `ws_throughput` example, docs/performance.md).
    pub read_buffer_size: usize,
}

impl Default for WsStreamConfig {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            write_batch: 256 * 1024,
            read_buffer_size: 16 * 1024,
        }
    }
}

impl WsStreamConfig {
    /// The most tungstenite's output buffer holds: one write batch and its frame header, and
    /// room for a control frame (64 KiB more).
    pub fn max_write_buffer(&self) -> usize {
        self.write_batch.saturating_add(64 * 1024)
    }

    /// The tungstenite configuration for these limits. Its own write buffering is off
    /// (`write_buffer_size` 0): [`WsStream`] batches writes itself. Its output buffer is
    /// bounded ([`WsStreamConfig::max_write_buffer`]): otherwise a peer that sends pings and
    /// never reads makes every pong pile up in it, without limit.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size.max(1))
            .write_buffer_size(0)
            .max_write_buffer_size(self.max_write_buffer())
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}

/// Where the reading half is.
#[derive(Debug)]
enum ReadState {
    Open,
    /// The peer's close frame arrived: flush our reply (tungstenite queued it).
    Replying,
    /// The close handshake is done: shut the socket down.
    ShuttingDown,
    /// Clean end.
    Eof,
    /// A fatal error, reported again on every read.
    Failed(io::ErrorKind, String),
}

/// Where the writing half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    Open,
    /// Our close frame is queued: flush it.
    Closing,
    Closed,
}

/// A tokio byte stream over the binary messages of a WebSocket.
///
/// - **Reads** hand out each binary message's payload (`Bytes`, as tungstenite parsed it) across
///   calls, without an intermediate buffer. A text message is an `InvalidData` error (and a close
///   frame with code 1003 is sent); so is a message over
///   [`WsStreamConfig::max_message_size`] (close code 1009). Pings are answered (tungstenite
///   queues the pong, the next read or write flushes it, so a reader alone keeps answering);
///   pongs are counted ([`WsStream::pongs_received`]) and otherwise ignored.
/// - **End**: the peer's close frame reads as a clean end of stream once our reply is flushed;
///   the connection ending without a close frame is an `io::Error` of kind `ConnectionReset`,
///   never a clean end.
/// - **Writes** are coalesced into one binary message of up to [`WsStreamConfig::write_batch`]
///   bytes, sent on `poll_flush` or when the batch is full (one copy into the batch; tungstenite
///   then copies the frame, masked when we are the client, into its output buffer). The batch
///   buffer is released at each flush. `poll_shutdown` sends the pending
///   batch, then a close frame with code 1000 (normal closure); reading on then waits for the
///   peer's close frame and ends cleanly.
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    read: Bytes,
    read_state: ReadState,
    write: BytesMut,
    write_state: WriteState,
    write_batch: usize,
    pongs: u64,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a WebSocket whose handshake is done. The limits in `config` are the ones the
    /// WebSocket was made with; only `write_batch` is read here.
    pub fn new(ws: WebSocketStream<S>, config: &WsStreamConfig) -> Self {
        Self {
            ws,
            read: Bytes::new(),
            read_state: ReadState::Open,
            write: BytesMut::new(),
            write_state: WriteState::Open,
            write_batch: config.write_batch.max(1),
            pongs: 0,
        }
    }

    /// Runs the client handshake over `io` for `uri` (`ws://host:port/path`; the scheme only
    /// picks the default port, TLS, if any, is already in `io`).
    pub async fn connect(
        io: S,
        uri: &str,
        config: &WsStreamConfig,
    ) -> Result<(Self, Response), WsError> {
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(uri, io, Some(config.websocket_config()))
                .await?;
        Ok((Self::new(ws, config), response))
    }

    /// Runs the server handshake over `io`, accepting only requests for `path` (other paths
    /// are answered 404 Not Found and fail with `WsError::Http`).
    pub async fn accept(io: S, path: &str, config: &WsStreamConfig) -> Result<Self, WsError> {
        let path = path.to_owned();
        // tungstenite's callback type fixes the error's size.
        #[allow(clippy::result_large_err)]
        let check = move |request: &Request, response| {
            if request.uri().path() == path {
                Ok(response)
            } else {
                let mut refusal = ErrorResponse::new(Some("no WebSocket endpoint here\n".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                Err(refusal)
            }
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(
            io,
            check,
            Some(config.websocket_config()),
        )
        .await?;
        Ok(Self::new(ws, config))
    }

    /// Sends a ping with `payload` (at most 125 bytes), after the pending write batch. The
    /// peer's pong is counted by [`WsStream::pongs_received`] when the stream is read.
    pub async fn ping(&mut self, payload: Bytes) -> io::Result<()> {
        if payload.len() > 125 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a ping carries 125 bytes at most",
            ));
        }
        std::future::poll_fn(|cx| self.poll_send_batch(cx)).await?;
        futures::SinkExt::send(&mut self.ws, Message::Ping(payload)).await.map_err(io_error)
    }

    /// How many pongs the reads have seen.
    pub fn pongs_received(&self) -> u64 {
        self.pongs
    }

    /// The socket under the WebSocket.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    /// The socket under the WebSocket; bytes read or written but not yet passed on are lost.
    pub fn into_inner(self) -> S {
        self.ws.into_inner()
    }

    /// Hands the pending write batch to tungstenite as one binary message.
    fn poll_send_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if self.write_state != WriteState::Open {
            return Poll::Ready(Err(closed_for_writing()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        let batch = self.write.split().freeze();
        Pin::new(&mut self.ws).start_send(Message::Binary(batch)).map_err(io_error)?;
        Poll::Ready(Ok(()))
    }

    /// Records a fatal read error; for a protocol violation, also tells the peer with a close
    /// frame and shuts the socket down (best effort, without waiting).
    fn fail(&mut self, cx: &mut Context<'_>, error: io::Error, code: Option<CloseCode>) {
        tracing::debug!(%error, "websocket read failed");
        if let (Some(code), WriteState::Open) = (code, self.write_state) {
            self.write.clear();
            let frame = CloseFrame { code, reason: "".into() };
            if Pin::new(&mut self.ws).start_send(Message::Close(Some(frame))).is_ok()
                && Pin::new(&mut self.ws).poll_flush(cx).is_ready()
            {
                let _ = Pin::new(self.ws.get_mut()).poll_shutdown(cx);
            }
        }
        self.write_state = WriteState::Closed;
        self.read_state = ReadState::Failed(error.kind(), error.to_string());
    }
}

/// Maps a tungstenite error to the `io::Error` the layers above expect.
fn io_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            io::Error::new(io::ErrorKind::ConnectionReset, e)
        }
        WsError::Io(e) => e,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the WebSocket connection ended without a close frame",
        ),
        WsError::Protocol(ProtocolError::SendAfterClosing)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => closed_for_writing(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// The close code that tells the peer about a read error (none for I/O errors).
fn close_code(error: &WsError) -> Option<CloseCode> {
    match error {
        WsError::Capacity(_) => Some(CloseCode::Size),
        WsError::Utf8(_) => Some(CloseCode::Invalid),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}

fn closed_for_writing() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed for writing")
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = buf.remaining().min(this.read.len());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                if this.read.is_empty() {
                    // Let the message's allocation go now, not at the next message.
                    this.read = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            match &this.read_state {
                ReadState::Open => {}
                ReadState::Replying => {
                    // A failed reply does not make the peer's clean close unclean.
                    let _ = ready!(Pin::new(&mut this.ws).poll_flush(cx));
                    this.write_state = WriteState::Closed;
                    this.read_state = ReadState::ShuttingDown;
                    continue;
                }
                ReadState::ShuttingDown => {
                    let _ = ready!(Pin::new(this.ws.get_mut()).poll_shutdown(cx));
                    this.read_state = ReadState::Eof;
                    continue;
                }
                ReadState::Eof => return Poll::Ready(Ok(())),
                ReadState::Failed(kind, message) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
                }
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.read = payload,
                // tungstenite queued the pong; the next `poll_next` flushes it before reading.
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Pong(_))) => this.pongs += 1,
                Some(Ok(Message::Text(_))) => {
                    let error = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a binary WebSocket stream",
                    );
                    this.fail(cx, error, Some(CloseCode::Unsupported));
                }
                Some(Ok(Message::Close(_))) => this.read_state = ReadState::Replying,
                Some(Err(error)) => {
                    let code = close_code(&error);
                    this.fail(cx, io_error(error), code);
                }
                // Only after a close frame (ours acknowledged, or the peer's replied to).
                None => this.read_state = ReadState::ShuttingDown,
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_state != WriteState::Open {
            return Poll::Ready(Err(closed_for_writing()));
        }
        if this.write.len() >= this.write_batch {
            ready!(this.poll_send_batch(cx))?;
        }
        let n = buf.len().min(this.write_batch - this.write.len());
        this.write.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_batch(cx))?;
        // The batch went out: let its buffer go (a bulk writer reuses it between flushes).
        this.write = BytesMut::new();
        if this.write_state == WriteState::Closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_state == WriteState::Open {
            ready!(this.poll_send_batch(cx))?;
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
            let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
            match Pin::new(&mut this.ws).start_send(Message::Close(Some(frame))) {
                // The peer closed first: its close frame waits unread; nothing more to send.
                Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => {
                    this.write_state = WriteState::Closed;
                    return Poll::Ready(Ok(()));
                }
                other => other.map_err(io_error)?,
            }
            this.write_state = WriteState::Closing;
        }
        if this.write_state == WriteState::Closing {
            ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(io_error)?;
            this.write_state = WriteState::Closed;
        }
        Poll::Ready(Ok(()))
    }
}
