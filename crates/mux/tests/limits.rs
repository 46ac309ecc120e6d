//! Stream limits and the inbound queue: yamux's own limit must never be what trips.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RawYamux, tcp_pair, within};
use futures::io::{AsyncReadExt as _, AsyncWriteExt as _};
use sinew_mux::{YamuxConfig, yamux, yamux_with_stats};
use sinew_transport::{Direction, MuxedConnection, Stream, StreamLimits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

fn config(outbound: usize, inbound: usize, inbound_queue: usize) -> YamuxConfig {
    YamuxConfig {
        limits: StreamLimits { outbound, inbound },
        inbound_queue,
        ..YamuxConfig::default()
    }
}

/// Accepts streams for as long as the connection lives (streams over the inbound limit are
/// refused inside `accept_stream`), handing them to the test.
fn accept_loop(conn: &MuxedConnection) -> mpsc::Receiver<Stream> {
    let (tx, rx) = mpsc::channel(64);
    let conn = conn.clone();
    tokio::spawn(async move {
        while let Some(stream) = conn.accept_stream().await {
            if tx.send(stream).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Opens a raw stream that announces itself with one byte, `tag`.
async fn open_tagged(remote: &RawYamux, tag: u8) -> yamux::Stream {
    let mut stream = remote.open().await;
    stream.write_all(&[tag]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Waits until `stream` reads EOF: how a reset shows on a yamux stream.
async fn expect_reset(stream: &mut yamux::Stream) {
    let mut rest = Vec::new();
    let n = within("a reset", stream.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(n, 0, "a refused stream carries no data back");
    assert!(stream.write_all(b"x").await.is_err(), "a reset stream cannot be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_three_times_the_outbound_limit_waits_and_never_kills_the_connection() {
    // The dialer's yamux limit is 16 + 1 + 1 + 16 = 34 streams: 48 yamux opens at once would
    // kill the connection; through sinew they wait for a slot. The listener admits and queues
    // more than the dialer opens: its slots free when its echo tasks drop their streams, which
    // can be a moment after the dialer has seen the echo end and opened its next stream, and up
    // to 16 new streams can arrive in one read, before its accept loop runs.
    const LIMIT: usize = 16;
    let dialer_config = config(LIMIT, 1, 1);
    let listener_config = config(1, 3 * LIMIT, 3 * LIMIT);
    assert!(3 * LIMIT > dialer_config.yamux_max_streams());
    let (a, b) = tcp_pair().await;
    let dialer = yamux(a, Direction::Outbound, &dialer_config);
    let listener = yamux(b, Direction::Inbound, &listener_config);
    let mut accepted = accept_loop(&listener);
    tokio::spawn(async move {
        while let Some(mut stream) = accepted.recv().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await.unwrap();
                stream.write_all(&data).await.unwrap();
                stream.finish().await.unwrap();
            });
        }
    });

    // Hold every slot: the next open waits, and proceeds when a slot frees.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(dialer.open_stream().await.unwrap());
    }
    let waiting = tokio::spawn({
        let dialer = dialer.clone();
        async move { dialer.open_stream().await.map(drop) }
    });
    tokio::task::yield_now().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), dialer.open_stream()).await.is_err(),
        "an open over the limit waits"
    );
    assert!(!waiting.is_finished());
    held.pop();
    within("the waiting open", waiting).await.unwrap().unwrap();
    drop(held);

    let open_now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..3 * LIMIT as u32 {
        let (dialer, open_now, peak) = (dialer.clone(), open_now.clone(), peak.clone());
        tasks.spawn(async move {
            let mut stream = dialer.open_stream().await.unwrap();
            let now = open_now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let data = vec![i as u8; 64 * 1024 + i as usize];
            stream.write_all(&data).await.unwrap();
            stream.finish().await.unwrap();
            let mut echo = Vec::new();
            stream.read_to_end(&mut echo).await.unwrap();
            assert!(echo == data, "echo of stream {i}");
            open_now.fetch_sub(1, Ordering::SeqCst);
        });
    }
    within("all streams", async {
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    })
    .await;
    assert!(peak.load(Ordering::SeqCst) <= LIMIT);
    assert!(!dialer.is_closed() && !listener.is_closed());
    assert_eq!(listener.refused_inbound(), 0);
}

#[tokio::test]
async fn a_remote_over_our_inbound_limit_gets_reset_and_counted() {
    // Our yamux limit is 2 + 2 + 2 + 16 = 22; the remote opens three times that many.
    let config = config(2, 2, 2);
    let total = 3 * config.yamux_max_streams();
    let (a, b) = tcp_pair().await;
    let remote = RawYamux::spawn(a, yamux::Mode::Client);
    let (ours, stats) = yamux_with_stats(b, Direction::Inbound, &config);
    let mut accepted = accept_loop(&ours);

    let mut streams = Vec::new();
    for tag in 0..total {
        streams.push(open_tagged(&remote, tag as u8).await);
    }
    // We keep the first two; every other stream is refused, whether by the limit or because the
    // inbound queue was full.
    let mut kept = Vec::new();
    let mut tags = BTreeSet::new();
    for _ in 0..2 {
        let mut stream = within("accept", accepted.recv()).await.unwrap();
        let mut tag = [0u8];
        stream.read_exact(&mut tag).await.unwrap();
        tags.insert(tag[0] as usize);
        kept.push(stream);
    }
    for (tag, stream) in streams.iter_mut().enumerate() {
        if !tags.contains(&tag) {
            expect_reset(stream).await;
        }
    }
    let refused = ours.refused_inbound() + stats.queue_full_resets();
    assert_eq!(refused, total as u64 - 2);
    assert!(ours.refused_inbound() > 0, "the limit refused some");
    assert!(!ours.is_closed());

    // Still usable: a freed slot admits the remote's next stream, and we can open our own.
    drop(kept.pop());
    let mut next = open_tagged(&remote, 200).await;
    let mut stream = within("accept after a slot freed", accepted.recv()).await.unwrap();
    let mut tag = [0u8];
    stream.read_exact(&mut tag).await.unwrap();
    assert_eq!(tag[0], 200);
    stream.write_all(b"ok").await.unwrap();
    let mut reply = [0u8; 2];
    next.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"ok");
    assert_eq!(ours.refused_inbound() + stats.queue_full_resets(), total as u64 - 2);
}

#[tokio::test]
async fn a_full_inbound_queue_resets_new_streams_and_counts_them() {
    let config = config(4, 16, 3);
    let (a, b) = tcp_pair().await;
    let mut remote = RawYamux::spawn(a, yamux::Mode::Client);
    let (ours, stats) = yamux_with_stats(b, Direction::Inbound, &config);

    // Nobody accepts: three streams wait in the queue, the next four are reset.
    let mut streams = Vec::new();
    for tag in 0..7 {
        streams.push(open_tagged(&remote, tag).await);
    }
    for stream in &mut streams[3..] {
        expect_reset(stream).await;
    }
    assert_eq!(stats.queue_full_resets(), 4);
    assert_eq!(ours.refused_inbound(), 0);

    // The queued streams are intact and in order.
    for expected in 0..3 {
        let mut stream = within("a queued stream", ours.accept_stream()).await.unwrap();
        let mut tag = [0u8];
        stream.read_exact(&mut tag).await.unwrap();
        assert_eq!(tag[0], expected);
    }
    // And the connection works both ways.
    let mut fresh = open_tagged(&remote, 9).await;
    let mut stream = within("accept", ours.accept_stream()).await.unwrap();
    let mut tag = [0u8];
    stream.read_exact(&mut tag).await.unwrap();
    assert_eq!(tag[0], 9);
    stream.write_all(b"back").await.unwrap();
    let mut reply = [0u8; 4];
    fresh.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"back");

    let mut out = ours.open_stream().await.unwrap();
    out.write_all(b"ours").await.unwrap();
    let mut theirs = within("raw accept", remote.accept()).await.unwrap();
    let mut got = [0u8; 4];
    theirs.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ours");
    assert_eq!(stats.queue_full_resets(), 4);
}

#[tokio::test]
async fn a_burst_of_streams_within_the_default_queue_is_accepted_whole() {
    let config = YamuxConfig::default();
    let burst = config.inbound_queue;
    let (a, b) = tcp_pair().await;
    let remote = RawYamux::spawn(a, yamux::Mode::Client);
    let (ours, stats) = yamux_with_stats(b, Direction::Inbound, &config);
    let mut accepted = accept_loop(&ours);

    // Open them all first, then announce them all at once: the frames arrive in one read.
    let mut streams = Vec::new();
    for _ in 0..burst {
        streams.push(remote.open().await);
    }
    for (tag, stream) in streams.iter_mut().enumerate() {
        stream.write_all(&[tag as u8]).await.unwrap();
    }
    let mut tags = BTreeSet::new();
    for _ in 0..burst {
        let mut stream = within("accept", accepted.recv()).await.unwrap();
        let mut tag = [0u8];
        stream.read_exact(&mut tag).await.unwrap();
        tags.insert(tag[0] as usize);
    }
    assert_eq!(tags, (0..burst).collect());
    assert_eq!(stats.queue_full_resets(), 0);
    assert_eq!(ours.refused_inbound(), 0);
}

/// A node-wide window budget caps the growth of every connection's window: each takes at most
/// a quarter of what is left at creation, and gives it back when it ends.
#[tokio::test]
async fn the_window_budget_caps_growth_across_connections() {
    let budget = sinew_mux::WindowBudget::new(8 << 20);
    let config = YamuxConfig { window_budget: Some(budget.clone()), ..YamuxConfig::default() };
    let floor = config.yamux_window_floor();
    let ((a, a_stats), (b, b_stats)) = common::pair(&config).await;
    // Two ends, each a quarter of what was left: 2 MiB, then 1.5 MiB.
    assert_eq!(a_stats.window(), floor + (2 << 20));
    assert_eq!(b_stats.window(), floor + (3 << 19));
    assert_eq!(budget.available(), (8 << 20) - (2 << 20) - (3 << 19));
    a.close().await;
    within("both ends to end", async {
        a_stats.ended().await;
        b_stats.ended().await;
    })
    .await;
    drop((a, b));
    assert_eq!(budget.available(), 8 << 20, "the grants came back");
    // Without a budget, the per-connection cap applies.
    let ((_c, c_stats), _d) = common::pair(&YamuxConfig::default()).await;
    assert_eq!(c_stats.window(), YamuxConfig::default().yamux_window());
}
