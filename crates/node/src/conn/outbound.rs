//! Streams we open: large messages, raw application streams, throughput tests.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sinew_codec::messages::{LARGE_TAKEN, MessageBody as _, OpenStream, Perf};
use sinew_codec::{Frame, Opcode};
use sinew_types::PeerId;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::frames::{WriteFault, finish_timed, write_all_timed, write_paced};
use super::rate::RateWindow;
use crate::shared::{PeerSlot, Shared, TransferGuard};
use crate::stats::StreamGuard;
use crate::stream::AppStream;
use crate::{SendError, StreamError};

/// Sends a large message on a stream of its own, waiting for room in the node's outbound
/// large-message budget. Returns once the whole message is handed to the muxer.
pub(crate) async fn send_large(
    shared: &Shared,
    slot: PeerSlot,
    frame: Frame,
) -> Result<(), SendError> {
    let permits = shared.large_cost(frame.encoded_len());
    let budget = shared
        .large_out
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| SendError::ShuttingDown)?;
    let result = write_large_stream(shared, slot, frame).await;
    drop(budget);
    result
}

/// Like [`send_large`] without waiting: `Full` if the budget has no room now; the write runs on
/// its own task.
pub(crate) fn try_send_large(
    shared: &Arc<Shared>,
    slot: PeerSlot,
    frame: Frame,
    transfer: Option<u64>,
) -> Result<(), SendError> {
    let permits = shared.large_cost(frame.encoded_len());
    let budget =
        shared.large_out.clone().try_acquire_many_owned(permits).map_err(|_| SendError::Full)?;
    // Registered before the task starts: a cancel right after the send finds it.
    let transfer = transfer.map(|id| {
        let (_, cancel, guard) = shared.start_transfer(Some(id));
        (cancel, guard)
    });
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let _ = write_large(&shared, slot, frame, transfer).await;
        drop(budget);
    });
    Ok(())
}

/// Writes a large message on a stream of its own. Each write must make progress within the
/// write-stall timeout, and the whole transfer keep up the minimum rate after the grace
/// period; otherwise the stream is dropped (reset) and the send fails with `Reset`, which
/// frees its budget for other sends.
async fn write_large(
    shared: &Arc<Shared>,
    slot: PeerSlot,
    frame: Frame,
    transfer: Option<(CancellationToken, TransferGuard)>,
) -> Result<(), SendError> {
    // A protocol's transfer can be cancelled: its stream is dropped (reset) at once.
    let Some((cancel, _guard)) = transfer else {
        return write_large_stream(shared, slot, frame).await;
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(SendError::Reset),
        result = write_large_stream(shared, slot, frame) => result,
    }
}

async fn write_large_stream(
    shared: &Shared,
    slot: PeerSlot,
    mut frame: Frame,
) -> Result<(), SendError> {
    frame.large = true;
    let config = &shared.config;
    let stall = config.write_stall_timeout;
    let mut stream = match tokio::time::timeout(stall, slot.muxer.open_stream()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(SendError::NotConnected),
        Err(_) => return Err(SendError::Reset),
    };
    let guard = StreamGuard::new(slot.stats.clone());
    let now = tokio::time::Instant::now();
    let mut rate = RateWindow::new(config.large_min_rate, config.frame_stall_timeout, now, 0);
    let total = frame.payload.len() as u64;
    let result: Result<(), WriteFault> = async {
        write_all_timed(&mut stream, frame.encode_header().as_bytes(), stall).await?;
        // The minimum rate is checked after every write the stream accepts.
        let mut written = 0u64;
        write_paced(&mut stream, &frame.payload, stall, &mut rate, &mut written, total).await?;
        if let Some(trailer) = frame.trailer() {
            write_all_timed(&mut stream, &trailer, stall).await?;
        }
        finish_timed(&mut stream, stall).await?;
        // The receiver writes LARGE_TAKEN and finishes its half once it has taken the
        // message; an end without it (a reset) means it refused it (its budget, or the
        // minimum rate).
        let mut answer = [0u8; 2];
        let read = tokio::time::timeout(stall, async {
            let mut got = 0;
            while got < answer.len() {
                match stream.read(&mut answer[got..]).await? {
                    0 => break,
                    n => got += n,
                }
            }
            Ok::<_, io::Error>(got)
        });
        match read.await {
            Ok(Ok(1)) if answer[0] == LARGE_TAKEN => Ok(()),
            Ok(Ok(_)) => Err(WriteFault::Io),
            Ok(Err(_)) => Err(WriteFault::Io),
            Err(_) => Err(WriteFault::Stalled),
        }
    }
    .await;
    if result.is_err() {
        return Err(if slot.muxer.is_closed() {
            SendError::NotConnected
        } else {
            SendError::Reset
        });
    }
    guard.stats().bytes_out.fetch_add(frame.encoded_len() as u64, Ordering::Relaxed);
    guard.stats().msgs_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Opens a raw application stream: writes the header naming `opcode`, then hands it over.
pub(crate) async fn open_app_stream(
    slot: PeerSlot,
    peer: PeerId,
    opcode: Opcode,
) -> Result<AppStream, StreamError> {
    let mut stream = slot.muxer.open_stream().await?;
    let header = Frame::message(Opcode::OPEN_STREAM, OpenStream { opcode }.encode()).to_bytes();
    stream.write_all(&header).await?;
    stream.flush().await?;
    Ok(AppStream::new(stream, StreamGuard::new(slot.stats), peer, opcode))
}

/// What a throughput test measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfReport {
    /// Bytes sent.
    pub uploaded: u64,
    /// Bytes received.
    pub downloaded: u64,
    /// Time from the first byte sent to the server's acknowledgement of the last.
    pub upload_time: Duration,
    /// Time from the acknowledgement to the last byte received.
    pub download_time: Duration,
}

impl PerfReport {
    /// Upload rate in MB/s (10^6 bytes per second).
    pub fn upload_mbps(&self) -> f64 {
        self.uploaded as f64 / self.upload_time.as_secs_f64().max(1e-9) / 1e6
    }

    /// Download rate in MB/s.
    pub fn download_mbps(&self) -> f64 {
        self.downloaded as f64 / self.download_time.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Runs a throughput test on one stream: sends `upload` bytes in `chunk`-sized writes, waits for
/// the server's count, then receives `download` bytes. Every step must make progress within
/// `stall`, so a server that stops answering cannot hold the test forever.
pub(crate) async fn perf(
    slot: PeerSlot,
    upload: u64,
    download: u64,
    chunk: usize,
    stall: Duration,
) -> io::Result<PerfReport> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the perf server made no progress");
    let within = |f| async move { tokio::time::timeout(stall, f).await.map_err(|_| timed_out())? };
    let mut stream = tokio::time::timeout(stall, slot.muxer.open_stream())
        .await
        .map_err(|_| timed_out())?
        .map_err(io::Error::other)?;
    let _guard = StreamGuard::new(slot.stats.clone());
    let header = Frame::message(Opcode::PERF, Perf { upload, download }.encode()).to_bytes();
    let data = Arc::new(vec![0x5a_u8; chunk.max(1)]);
    let start = Instant::now();
    write_all_timed(&mut stream, &header, stall).await.map_err(fault_error)?;
    let mut left = upload;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
        write_all_timed(&mut stream, &data[..n], stall).await.map_err(fault_error)?;
        left -= n as u64;
    }
    finish_timed(&mut stream, stall).await.map_err(fault_error)?;
    let mut count = [0u8; 8];
    within(stream.read_exact(&mut count)).await?;
    let acked = Instant::now();
    if u64::from_le_bytes(count) != upload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "server counted a different number of bytes",
        ));
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut downloaded = 0u64;
    loop {
        let n =
            tokio::time::timeout(stall, stream.read(&mut buf)).await.map_err(|_| timed_out())??;
        if n == 0 {
            break;
        }
        downloaded += n as u64;
    }
    slot.stats.bytes_out.fetch_add(upload, Ordering::Relaxed);
    slot.stats.bytes_in.fetch_add(downloaded, Ordering::Relaxed);
    Ok(PerfReport {
        uploaded: upload,
        downloaded,
        upload_time: acked - start,
        download_time: acked.elapsed(),
    })
}

fn fault_error(fault: WriteFault) -> io::Error {
    match fault {
        WriteFault::Io => io::Error::new(io::ErrorKind::ConnectionReset, "the perf stream ended"),
        WriteFault::Stalled => {
            io::Error::new(io::ErrorKind::TimedOut, "the perf server stopped reading")
        }
    }
}
