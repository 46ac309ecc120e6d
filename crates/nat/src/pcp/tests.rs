use proptest::prelude::*;

use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn mapped(address: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&address);
    out
}

fn map_data() -> MapData {
    MapData {
        nonce: NONCE,
        protocol: MapProtocol::Tcp,
        internal_port: 4001,
        external_port: 4001,
        external_address: ANY_IPV4,
    }
}

#[test]
fn announce_request_bytes() {
    let bytes = Request::Announce { client: CLIENT }.encode();
    let mut expected = vec![2, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&mapped([10, 77, 0, 2]));
    assert_eq!(bytes, expected);
    assert_eq!(Request::decode(&bytes), Ok(Request::Announce { client: CLIENT }));
}

#[test]
fn map_request_bytes() {
    let request = Request::Map { lifetime: 3600, client: CLIENT, map: map_data() };
    let bytes = request.encode();
    assert_eq!(bytes.len(), 60);
    assert_eq!(&bytes[..8], [2, 1, 0, 0, 0, 0, 0x0e, 0x10]);
    assert_eq!(&bytes[8..24], mapped([10, 77, 0, 2]));
    assert_eq!(&bytes[24..36], NONCE);
    assert_eq!(&bytes[36..40], [6, 0, 0, 0]);
    assert_eq!(&bytes[40..44], [0x0f, 0xa1, 0x0f, 0xa1]);
    assert_eq!(&bytes[44..60], mapped([0, 0, 0, 0]));
    assert_eq!(Request::decode(&bytes), Ok(request));
}

fn map_response_bytes(result: u8, protocol: u8) -> Vec<u8> {
    let mut bytes = vec![2, 0x81, 0, result, 0, 0, 0x0e, 0x10, 0, 0, 0, 42];
    bytes.extend_from_slice(&[0; 12]);
    bytes.extend_from_slice(&NONCE);
    bytes.extend_from_slice(&[protocol, 0, 0, 0, 0x0f, 0xa1, 0x9c, 0x40]);
    bytes.extend_from_slice(&mapped([100, 128, 0, 1]));
    bytes
}

#[test]
fn map_response() {
    let bytes = map_response_bytes(0, 17);
    let response = Response::decode(&bytes).unwrap();
    assert_eq!(
        response,
        Response {
            opcode: Opcode::Map,
            result: Ok(()),
            lifetime: 3600,
            epoch: 42,
            map: Some(MapData {
                nonce: NONCE,
                protocol: MapProtocol::Udp,
                internal_port: 4001,
                external_port: 40000,
                external_address: IpAddr::V4(Ipv4Addr::new(100, 128, 0, 1)),
            }),
            options: vec![],
        }
    );
    assert_eq!(response.encode(), bytes);
}

#[test]
fn announce_response() {
    let mut bytes = vec![2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    bytes.extend_from_slice(&[0; 12]);
    let response = Response::decode(&bytes).unwrap();
    assert_eq!(response.opcode, Opcode::Announce);
    assert_eq!(response.epoch, 256);
    assert_eq!(response.map, None);
    assert_eq!(response.encode(), bytes);
}

#[test]
fn every_result_code() {
    let expected = [
        PcpError::UnsupportedVersion,
        PcpError::NotAuthorized,
        PcpError::MalformedRequest,
        PcpError::UnsupportedOpcode,
        PcpError::UnsupportedOption,
        PcpError::MalformedOption,
        PcpError::NetworkFailure,
        PcpError::NoResources,
        PcpError::UnsupportedProtocol,
        PcpError::UserExceededQuota,
        PcpError::CannotProvideExternal,
        PcpError::AddressMismatch,
        PcpError::ExcessiveRemotePeers,
    ];
    assert_eq!(PcpError::from_code(0), None);
    for (code, error) in (1u8..).zip(expected) {
        assert_eq!(PcpError::from_code(code), Some(error));
        assert_eq!(error.code(), code);
        assert!(error.to_string().contains(&format!("({code})")));
        // With MAP data copied from the request, and with the header only.
        let full = Response::decode(&map_response_bytes(code, 6)).unwrap();
        assert_eq!(full.result, Err(error));
        assert!(full.map.is_some());
        let header = Response::decode(&map_response_bytes(code, 6)[..24]).unwrap();
        assert_eq!(header.result, Err(error));
        assert_eq!(header.map, None);
        for response in [full, header] {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }
    for code in [14, 200, 255] {
        assert_eq!(PcpError::from_code(code), Some(PcpError::Unknown(code)));
        assert_eq!(PcpError::Unknown(code).code(), code);
    }
    assert!(PcpError::NotAuthorized.is_long_lived());
    assert!(!PcpError::NoResources.is_long_lived());
}

#[test]
fn options() {
    let mut bytes = map_response_bytes(0, 6);
    // Option 1 with 5 bytes of data (3 of padding), then option 0x80 with none.
    bytes.extend_from_slice(&[1, 0, 0, 5, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0, 0]);
    bytes.extend_from_slice(&[0x80, 0, 0, 0]);
    let response = Response::decode(&bytes).unwrap();
    assert_eq!(
        response.options,
        vec![
            PcpOption { code: 1, data: vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee] },
            PcpOption { code: 0x80, data: vec![] },
        ]
    );
    assert_eq!(response.encode(), bytes);
    // An option longer than the message.
    let mut truncated = map_response_bytes(0, 6);
    truncated.extend_from_slice(&[1, 0, 0, 9, 0, 0, 0, 0]);
    assert_eq!(Response::decode(&truncated), Err(DecodeError::Truncated { len: 8, need: 16 }));
}

#[test]
fn truncated_and_garbage() {
    let bytes = map_response_bytes(0, 6);
    assert_eq!(Response::decode(&[]), Err(DecodeError::Truncated { len: 0, need: 24 }));
    for len in (1..24).step_by(3) {
        assert_eq!(Response::decode(&bytes[..len]), Err(DecodeError::Truncated { len, need: 24 }));
    }
    assert_eq!(Response::decode(&bytes[..25]), Err(DecodeError::Length(25)));
    assert_eq!(Response::decode(&bytes[..28]), Err(DecodeError::Truncated { len: 28, need: 60 }));
    assert_eq!(Response::decode(&bytes[..24]), Err(DecodeError::MissingMapData));
    assert_eq!(Response::decode(&[2; 1104]), Err(DecodeError::Length(1104)));
    // A NAT-PMP gateway's "unsupported version" answer.
    assert_eq!(Response::decode(&[0, 0x81, 0, 1, 0, 0, 0, 7]), Err(DecodeError::Version(0)));
    // Direction, opcode, protocol.
    let mut request = bytes.clone();
    request[1] = 1;
    assert_eq!(Response::decode(&request), Err(DecodeError::Direction(1)));
    assert_eq!(Request::decode(&bytes), Err(DecodeError::Direction(0x81)));
    let mut peer = bytes.clone();
    peer[1] = 0x82;
    assert_eq!(Response::decode(&peer), Err(DecodeError::UnknownOpcode(2)));
    assert_eq!(Response::decode(&map_response_bytes(0, 1)), Err(DecodeError::Protocol(1)));
}

#[test]
fn ipv6_addresses_stay_ipv6() {
    let mut data = map_data();
    data.external_address = IpAddr::V6("2001:db8::1".parse().unwrap());
    let request = Request::Map { lifetime: 1, client: "fe80::1".parse().unwrap(), map: data };
    assert_eq!(Request::decode(&request.encode()), Ok(request));
}

fn map_strategy() -> impl Strategy<Value = MapData> {
    (any::<[u8; 12]>(), any::<bool>(), any::<u16>(), any::<u16>(), any::<[u8; 16]>()).prop_map(
        |(nonce, tcp, internal_port, external_port, address)| MapData {
            nonce,
            protocol: if tcp { MapProtocol::Tcp } else { MapProtocol::Udp },
            internal_port,
            external_port,
            external_address: address_from(&address),
        },
    )
}

fn response_strategy() -> impl Strategy<Value = Response> {
    let option = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20))
        .prop_map(|(code, data)| PcpOption { code, data });
    (
        any::<bool>(),
        0u8..=255,
        any::<u32>(),
        any::<u32>(),
        map_strategy(),
        proptest::collection::vec(option, 0..4),
    )
        .prop_map(|(announce, code, lifetime, epoch, map, options)| {
            let result = PcpError::from_code(code).map_or(Ok(()), Err);
            Response {
                opcode: if announce { Opcode::Announce } else { Opcode::Map },
                result,
                lifetime,
                epoch,
                map: (!announce).then_some(map),
                options,
            }
        })
}

proptest! {
    #[test]
    fn decoding_never_panics_and_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        crate::fuzzing::pcp_response(&data);
    }

    #[test]
    fn near_valid_input_never_panics(
        mut data in proptest::collection::vec(any::<u8>(), 24..160),
        opcode in 0u8..2,
    ) {
        data.truncate(data.len() / 4 * 4);
        data[0] = VERSION;
        data[1] = 0x80 | opcode;
        if data.len() > 36 {
            data[36] = 6;
        }
        crate::fuzzing::pcp_response(&data);
    }

    #[test]
    fn responses_round_trip(response in response_strategy()) {
        prop_assert_eq!(Response::decode(&response.encode()), Ok(response));
    }

    #[test]
    fn requests_round_trip(lifetime: u32, client: [u8; 16], map in map_strategy()) {
        let request = Request::Map { lifetime, client: address_from(&client), map };
        prop_assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
}
