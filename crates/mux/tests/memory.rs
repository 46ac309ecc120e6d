//! Heap cost of an idle yamux connection, measured with a counting global allocator.
#![allow(unsafe_code)] // the counting allocator

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::tcp_pair;
use futures::FutureExt as _;
use sinew_mux::{YamuxConfig, yamux};
use sinew_transport::{Direction, MuxedConnection, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

/// Live heap bytes and live allocations.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::SeqCst), LIVE_BLOCKS.load(Ordering::SeqCst))
}

/// Lets the driver tasks run until they are idle (current-thread runtime: they run when we
/// yield).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Heap cost per endpoint, in (bytes, allocations), of: the connection alone; plus one stream
/// that moved a byte each way; plus a reader parked on that stream.
async fn measure(pairs: usize) -> [(isize, isize); 3] {
    let config = YamuxConfig::default();
    let mut sockets = Vec::new();
    for _ in 0..pairs {
        sockets.push(tcp_pair().await); // the sockets themselves are not the muxer's cost
    }
    settle().await;
    let start = live();

    let mut conns: Vec<(MuxedConnection, MuxedConnection)> = Vec::new();
    for (a, b) in sockets {
        conns.push((yamux(a, Direction::Outbound, &config), yamux(b, Direction::Inbound, &config)));
    }
    settle().await;
    let connected = live();

    let mut streams: Vec<(Stream, Stream)> = Vec::new();
    for (dialer, listener) in &conns {
        let mut out = dialer.open_stream().await.unwrap();
        out.write_all(b"x").await.unwrap();
        let mut inc = listener.accept_stream().await.unwrap();
        let mut byte = [0u8];
        inc.read_exact(&mut byte).await.unwrap();
        inc.write_all(b"y").await.unwrap();
        out.read_exact(&mut byte).await.unwrap();
        streams.push((out, inc));
    }
    settle().await;
    let with_stream = live();

    for (out, inc) in &mut streams {
        let mut byte = [0u8];
        // One poll: each stream registers a waiting reader, as an application's reader would.
        assert!(out.read(&mut byte).now_or_never().is_none());
        assert!(inc.read(&mut byte).now_or_never().is_none());
    }
    settle().await;
    let reading = live();

    let endpoints = 2 * pairs as isize;
    let per = |(b1, n1): (isize, isize), (b0, n0): (isize, isize)| {
        ((b1 - b0) / endpoints, (n1 - n0) / endpoints)
    };
    let result = [per(connected, start), per(with_stream, start), per(reading, start)];
    drop(streams);
    drop(conns);
    settle().await;
    result
}

/// Heap bytes kept by what `make` returns.
fn cost<T>(make: impl FnOnce() -> T) -> isize {
    let before = live().0;
    let value = make();
    let cost = live().0 - before;
    drop(value);
    cost
}

#[test]
fn an_idle_connection_with_one_idle_stream_stays_within_budget() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        measure(2).await; // first use of lazily initialised statics (tracing, tokio, yamux)
        let [connection, with_stream, reading] = measure(32).await;
        eprintln!("heap per endpoint (bytes, allocations):");
        eprintln!("  idle connection, no stream:  {connection:?}");
        eprintln!("  plus one idle stream:        {with_stream:?}");
        eprintln!("  plus a reader waiting on it: {reading:?}");
        // Some of the parts, for the record.
        let (socket, _peer) = tcp_pair().await;
        eprintln!("parts:");
        eprintln!(
            "  yamux::Connection::new: {} B on the heap, {} B inline (inside the driver task)",
            cost(|| yamux::Connection::new(
                socket.compat(),
                yamux::Config::default(),
                yamux::Mode::Client
            )),
            size_of::<yamux::Connection<Compat<tokio::net::TcpStream>>>(),
        );
        eprintln!(
            "  futures mpsc channel: {} B; tokio mpsc channel: {} B (either capacity)",
            cost(|| futures::channel::mpsc::channel::<Box<u8>>(31)),
            cost(|| tokio::sync::mpsc::channel::<Box<u8>>(32)),
        );
        eprintln!("  CancellationToken: {} B", cost(CancellationToken::new));

        assert!(connection.0 > 0 && with_stream.0 > connection.0, "the counter counts");
        // sinew's budget for a whole idle endpoint is 8 KiB; the muxer must leave most of it.
        assert!(reading.0 < 4 * 1024, "{reading:?} per endpoint");
    });
}
