//! The heap an idle `NoiseStream` holds, measured with a counting allocator.
//!
//! The allocator counts, per thread, the bytes allocated minus the bytes freed. The dialer runs
//! on the test thread (a current-thread runtime); the listener runs on a thread of its own, so
//! only the dialer's allocations are counted. Run with `--nocapture` to see the numbers.
#![cfg(feature = "noise")]
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::task::Poll;

use sinew_secure::{NoiseStream, upgrade_inbound, upgrade_outbound};
use sinew_transport::NoiseSuite;
use sinew_types::Keypair;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Polls one read; true if it is pending (nothing to read), which is the stream's idle point.
async fn read_is_pending<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; 64];
        let mut buf = ReadBuf::new(&mut buf);
        Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut buf).is_pending())
    })
    .await
}

/// The listener: echoes whatever arrives, message by message, on its own thread.
fn spawn_echo_listener(
    listener: std::net::TcpListener,
    suite_seen: std::sync::mpsc::SyncSender<()>,
) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = TcpListener::from_std(listener).unwrap();
            let identity =
                sinew_secure::NoiseIdentity::new(&Keypair::from_secret_bytes([2; 32]), 2);
            let (socket, _) = listener.accept().await.unwrap();
            let timeout = std::time::Duration::from_secs(10);
            let (mut stream, _) = upgrade_inbound(socket, &identity, timeout).await.unwrap();
            let _ = suite_seen.send(());
            let mut buf = vec![0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        stream.write_all(&buf[..n]).await.unwrap();
                        stream.flush().await.unwrap();
                    }
                }
            }
        });
    });
}

async fn measure(suite: NoiseSuite) -> (isize, isize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    spawn_echo_listener(listener, tx);

    let identity = sinew_secure::NoiseIdentity::new(&Keypair::from_secret_bytes([1; 32]), 1);
    let socket = TcpStream::connect(addr).await.unwrap();
    let timeout = std::time::Duration::from_secs(10);
    // The socket is connected and registered: from here on, growth is the handshake's and the
    // stream's.
    let before = live();
    let (mut stream, _) = upgrade_outbound(socket, &identity, suite, None, timeout).await.unwrap();
    rx.recv().unwrap();
    for message in [&b"ping"[..], b"a somewhat longer message of a few dozen bytes", &[7u8; 3000]] {
        stream.write_all(message).await.unwrap();
        stream.flush().await.unwrap();
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message);
    }
    // The idle points: a flush with nothing written since the previous one releases the write
    // buffers (yamux flushes on every pass of its loop), a read that finds nothing the read
    // buffers.
    stream.flush().await.unwrap();
    assert!(read_is_pending(&mut stream).await, "nothing more to read");
    let idle = live() - before;
    assert_eq!(stream.buffered_capacity(), 0, "idle buffers are released");
    drop(stream);
    let after_drop = live() - before;
    (idle, after_drop)
}

#[test]
fn idle_noise_stream_heap() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for suite in [NoiseSuite::ChaChaPoly, NoiseSuite::AesGcm] {
        let (idle, after_drop) = rt.block_on(measure(suite));
        let size = size_of::<NoiseStream<TcpStream>>();
        let held = idle - after_drop;
        println!(
            "{suite:?}: size_of::<NoiseStream<TcpStream>>() = {size} bytes; idle heap held by the \
             stream = {held} bytes (net growth since before the handshake {idle}, after drop \
             {after_drop})"
        );
        assert!(held > 0, "the cipher state lives on the heap");
        assert!(held <= 2048, "an idle NoiseStream holds {held} bytes of heap");
        assert!(size <= 512, "NoiseStream is {size} bytes");
    }
}
