//! The UDP clients against small servers on loopback that misbehave on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::UdpSocket;

use super::*;

/// A server on loopback that calls `answer` for every datagram (with its index) and sends
/// whatever datagrams it returns.
async fn server(
    answer: impl Fn(usize, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddrV4, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(address) = socket.local_addr().unwrap() else { unreachable!() };
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let index = seen.fetch_add(1, Ordering::SeqCst);
            for reply in answer(index, &buf[..len]) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (address, count)
}

fn map_reply(request: &[u8], external_port: u16) -> Vec<u8> {
    let Ok(natpmp::Request::Map { protocol, internal_port, lifetime, .. }) =
        natpmp::Request::decode(request)
    else {
        panic!("not a map request: {request:?}")
    };
    natpmp::Response::Map { epoch: 10, protocol, internal_port, external_port, lifetime }.encode()
}

#[tokio::test]
async fn natpmp_retransmits_until_answered() {
    // Drops the first two requests.
    let (address, count) =
        server(|i, request| if i < 2 { vec![] } else { vec![map_reply(request, 5000)] }).await;
    let mut client = NatPmpClient::connect(address).await.unwrap();
    assert_eq!(client.local_address(), Ipv4Addr::LOCALHOST);
    let start = Instant::now();
    let granted =
        client.map(MapProtocol::Tcp, 4001, 4001, 60, Duration::from_secs(3)).await.unwrap();
    assert_eq!(granted, (5000, 60, 10));
    // Sent at 0, 250 ms and 750 ms.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(740), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn natpmp_ignores_strays() {
    let (address, _) = server(|_, request| {
        let Ok(natpmp::Request::Map { internal_port, .. }) = natpmp::Request::decode(request)
        else {
            return vec![];
        };
        vec![
            // Garbage, another opcode, another port, then the answer.
            vec![1, 2, 3],
            natpmp::Response::ExternalAddress { epoch: 1, address: Ipv4Addr::LOCALHOST }.encode(),
            natpmp::Response::Map {
                epoch: 1,
                protocol: MapProtocol::Tcp,
                internal_port: internal_port + 1,
                external_port: 1,
                lifetime: 1,
            }
            .encode(),
            map_reply(request, 4444),
        ]
    })
    .await;
    let mut client = NatPmpClient::connect(address).await.unwrap();
    let granted = client.map(MapProtocol::Tcp, 4001, 0, 60, Duration::from_secs(2)).await;
    assert_eq!(granted.unwrap(), (4444, 60, 10));
}

#[tokio::test]
async fn natpmp_result_codes_and_pcp_servers() {
    let (address, _) = server(|i, _| match i {
        0 => vec![
            natpmp::Response::Failure { opcode: 0, epoch: 3, error: NatPmpError::NotAuthorized }
                .encode(),
        ],
        // A PCP-only server: a PCP response with UNSUPP_VERSION.
        _ => vec![
            pcp::Response {
                opcode: pcp::Opcode::Announce,
                result: Err(PcpError::UnsupportedVersion),
                lifetime: 0,
                epoch: 0,
                map: None,
                options: vec![],
            }
            .encode(),
        ],
    })
    .await;
    let mut client = NatPmpClient::connect(address).await.unwrap();
    let timeout = Duration::from_secs(2);
    let refused = client.external_address(timeout).await;
    assert!(matches!(refused, Err(Error::NatPmp(NatPmpError::NotAuthorized))), "{refused:?}");
    let pcp_only = client.external_address(timeout).await;
    assert!(
        matches!(pcp_only, Err(Error::NatPmp(NatPmpError::UnsupportedVersion))),
        "{pcp_only:?}"
    );
}

#[tokio::test]
async fn times_out_within_the_bound() {
    let (address, count) = server(|_, _| vec![]).await;
    let mut client = PcpClient::connect(address).await.unwrap();
    let start = Instant::now();
    let result = client.announce(Duration::from_millis(600)).await;
    let took = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(900), "{took:?}");
    // Sent at 0 and 250 ms (the next would be at 750 ms).
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn nothing_listening_is_refused_fast() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(address) = socket.local_addr().unwrap() else { unreachable!() };
    drop(socket);
    let mut client = NatPmpClient::connect(address).await.unwrap();
    let start = Instant::now();
    let result = client.external_address(Duration::from_secs(3)).await;
    assert!(matches!(result, Err(Error::Refused)), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(result.unwrap_err().is_unreachable());
}

fn pcp_map_reply(request: &[u8], nonce: Option<[u8; 12]>) -> Vec<u8> {
    let Ok(pcp::Request::Map { lifetime, map, .. }) = pcp::Request::decode(request) else {
        panic!("not a MAP request")
    };
    let map = MapData {
        nonce: nonce.unwrap_or(map.nonce),
        external_port: 40000,
        external_address: IpAddr::V4(Ipv4Addr::new(100, 128, 0, 1)),
        ..map
    };
    pcp::Response {
        opcode: pcp::Opcode::Map,
        result: Ok(()),
        lifetime,
        epoch: 77,
        map: Some(map),
        options: vec![],
    }
    .encode()
}

#[tokio::test]
async fn pcp_map_matches_the_nonce() {
    let (address, _) = server(|_, request| {
        vec![pcp_map_reply(request, Some([9; 12])), pcp_map_reply(request, None)]
    })
    .await;
    let mut client = PcpClient::connect(address).await.unwrap();
    let grant = client
        .map([1; 12], MapProtocol::Udp, 4002, 4002, 120, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        grant,
        PcpGrant {
            external: SocketAddrV4::new(Ipv4Addr::new(100, 128, 0, 1), 40000),
            lifetime: 120,
            epoch: 77,
        }
    );
}

#[tokio::test]
async fn pcp_request_to_a_natpmp_gateway() {
    // NAT-PMP's answer to an unknown version: version 0, opcode 128 + 1, result 1.
    let (address, _) = server(|_, _| vec![vec![0, 0x81, 0, 1, 0, 0, 0, 5]]).await;
    let mut client = PcpClient::connect(address).await.unwrap();
    let result = client.map([1; 12], MapProtocol::Tcp, 1, 1, 1, Duration::from_secs(2)).await;
    assert!(matches!(result, Err(Error::Pcp(PcpError::UnsupportedVersion))), "{result:?}");
}

#[tokio::test]
async fn pcp_error_result() {
    let (address, _) = server(|_, request| {
        let mut reply = pcp_map_reply(request, None);
        reply[3] = 8; // NO_RESOURCES
        vec![reply]
    })
    .await;
    let mut client = PcpClient::connect(address).await.unwrap();
    let result = client.map([1; 12], MapProtocol::Tcp, 1, 1, 1, Duration::from_secs(2)).await;
    assert!(matches!(result, Err(Error::Pcp(PcpError::NoResources))), "{result:?}");
}
