//! Ping, messages both ways, request/response, acked sends, and unknown opcodes.

use bytes::Bytes;
use sinew::{Event, Opcode, RequestError, Status};
use sinew_tests::{WAIT, addr, node};

fn op(n: u32) -> Opcode {
    Opcode::app(n).expect("application opcode")
}

#[tokio::test]
async fn ping_messages_requests_acks_and_unknown_opcodes() {
    let (a, b) = (node().await, node().await);
    let mut a_inbox = a.inbox(op(1000)).await.unwrap();
    let mut b_inbox = b.inbox(op(1000)).await.unwrap();
    let mut echo = a.inbox(op(1001)).await.unwrap();
    let server = a.clone();
    tokio::spawn(async move {
        while let Some(msg) = echo.next().await {
            let mut answer = msg.payload.to_vec();
            answer.reverse();
            server.reply(&msg, Bytes::from(answer)).await.unwrap();
        }
    });

    let peer_a = b.dial(addr(&a)).await.unwrap();
    assert_eq!(peer_a, a.peer_id());
    let rtt = b.ping(peer_a).await.unwrap();
    assert!(rtt < WAIT);

    // Both ways, in order.
    for i in 0..200u32 {
        b.send(peer_a, op(1000), Bytes::from(i.to_le_bytes().to_vec())).await.unwrap();
    }
    for i in 0..200u32 {
        let msg = tokio::time::timeout(WAIT, a_inbox.next()).await.unwrap().unwrap();
        assert_eq!((msg.peer, &msg.payload[..]), (b.peer_id(), &i.to_le_bytes()[..]));
    }
    a.send(b.peer_id(), op(1000), Bytes::from_static(b"back")).await.unwrap();
    let msg = tokio::time::timeout(WAIT, b_inbox.next()).await.unwrap().unwrap();
    assert_eq!((msg.peer, &msg.payload[..]), (a.peer_id(), &b"back"[..]));

    // Request and response.
    let answer = b.request(peer_a, op(1001), Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(&answer[..], b"cba");

    // An acked send returns once the remote handed it to a handler.
    b.send_acked(peer_a, op(1000), Bytes::from_static(b"acked")).await.unwrap();
    let msg = a_inbox.try_next().expect("delivered before the ack");
    assert_eq!(&msg.payload[..], b"acked");

    // Nobody handles 1500: requests and acked sends get UNKNOWN_OPCODE, a plain message an
    // error event.
    let mut events = b.events();
    assert_eq!(
        b.request(peer_a, op(1500), Bytes::new()).await,
        Err(RequestError::Remote(Status::UNKNOWN_OPCODE))
    );
    assert_eq!(
        b.send_acked(peer_a, op(1500), Bytes::new()).await,
        Err(RequestError::Remote(Status::UNKNOWN_OPCODE))
    );
    b.send(peer_a, op(1500), Bytes::new()).await.unwrap();
    let status = events
        .wait_for(WAIT, |e| match e {
            Event::RemoteError { peer, opcode, status }
                if *peer == peer_a && *opcode == op(1500) =>
            {
                Some(*status)
            }
            _ => None,
        })
        .await;
    assert_eq!(status, Some(Status::UNKNOWN_OPCODE));
}

#[tokio::test]
async fn request_times_out_and_busy_inbox_answers_busy() {
    let a = sinew_tests::node_with(|c| c.inbox_capacity = 1).await;
    let b = node().await;
    let _silent = a.inbox(op(1002)).await.unwrap(); // never read
    let peer = b.dial(addr(&a)).await.unwrap();
    let first =
        b.request_with_timeout(peer, op(1002), Bytes::new(), std::time::Duration::from_millis(300));
    assert_eq!(first.await, Err(RequestError::Timeout), "taken by the inbox, never answered");
    let second = b.request_with_timeout(peer, op(1002), Bytes::new(), WAIT).await;
    assert_eq!(second, Err(RequestError::Remote(Status::BUSY)), "the inbox is full");
}

#[tokio::test]
async fn broadcast_reaches_everyone_and_randomly_reaches_n() {
    let hub = node().await;
    let mut hub_events = hub.events();
    let mut leaves = Vec::new();
    for _ in 0..5 {
        let leaf = node().await;
        let inbox = leaf.inbox(op(1000)).await.unwrap();
        leaf.dial(addr(&hub)).await.unwrap();
        leaves.push((leaf, inbox));
    }
    sinew_tests::connected_count(&mut hub_events, 5).await;
    let report = hub.broadcast(op(1000), Bytes::from_static(b"all"));
    assert_eq!(report.sent.len(), 5);
    for (_, inbox) in &mut leaves {
        let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
        assert_eq!(&msg.payload[..], b"all");
    }
    let report = hub.broadcast_randomly(2, op(1000), Bytes::from_static(b"some"));
    assert_eq!(report.sent.len(), 2);
    let mut got = 0;
    for (leaf, inbox) in &mut leaves {
        if report.sent.contains(&leaf.peer_id()) {
            let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
            assert_eq!(&msg.payload[..], b"some");
            got += 1;
        }
    }
    assert_eq!(got, 2);
    let subset = [leaves[0].0.peer_id()];
    assert_eq!(hub.broadcast_to(&subset, op(1000), Bytes::new()).sent, subset);
}
