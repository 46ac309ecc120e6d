use proptest::prelude::*;

use super::*;

#[test]
fn request_bytes() {
    assert_eq!(Request::ExternalAddress.encode(), [0, 0]);
    let udp = Request::Map {
        protocol: MapProtocol::Udp,
        internal_port: 0x1234,
        external_port: 0x5678,
        lifetime: 0x0102_0304,
    };
    assert_eq!(udp.encode(), [0, 1, 0, 0, 0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4]);
    assert_eq!(udp.opcode(), 1);
    let delete = Request::Map {
        protocol: MapProtocol::Tcp,
        internal_port: 80,
        external_port: 0,
        lifetime: 0,
    };
    assert_eq!(delete.encode(), [0, 2, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0]);
    for request in [Request::ExternalAddress, udp, delete] {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
}

#[test]
fn response_bytes() {
    let external = [0, 128, 0, 0, 0, 0, 1, 0, 100, 128, 0, 1];
    let decoded = Response::decode(&external).unwrap();
    assert_eq!(
        decoded,
        Response::ExternalAddress { epoch: 256, address: Ipv4Addr::new(100, 128, 0, 1) }
    );
    assert_eq!(decoded.encode(), external);
    assert_eq!(decoded.request_opcode(), 0);

    let map = [0, 129, 0, 0, 0, 0, 0, 9, 0x0f, 0xa1, 0x9c, 0x40, 0, 0, 0x0e, 0x10];
    let decoded = Response::decode(&map).unwrap();
    assert_eq!(
        decoded,
        Response::Map {
            epoch: 9,
            protocol: MapProtocol::Udp,
            internal_port: 4001,
            external_port: 40000,
            lifetime: 3600,
        }
    );
    assert_eq!(decoded.encode(), map);
    assert_eq!(decoded.epoch(), 9);
}

#[test]
fn every_result_code() {
    let expected = [
        (1, NatPmpError::UnsupportedVersion),
        (2, NatPmpError::NotAuthorized),
        (3, NatPmpError::NetworkFailure),
        (4, NatPmpError::OutOfResources),
        (5, NatPmpError::UnsupportedOpcode),
        (6, NatPmpError::Unknown(6)),
        (0xffff, NatPmpError::Unknown(0xffff)),
    ];
    assert_eq!(NatPmpError::from_code(0), None);
    for (code, error) in expected {
        assert_eq!(NatPmpError::from_code(code), Some(error));
        assert_eq!(error.code(), code);
        // 8 bytes are enough for an error, and longer ones (fields undefined) work too.
        let [hi, lo] = code.to_be_bytes();
        for len in [8, 12, 16] {
            let mut bytes = vec![0, 130, hi, lo, 0, 0, 0, 5];
            bytes.resize(len, 0xee);
            let response = Response::decode(&bytes).unwrap();
            assert_eq!(response, Response::Failure { opcode: 2, epoch: 5, error });
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn truncated_input() {
    let map = [0, 130, 0, 0, 0, 0, 0, 9, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x0e, 0x10];
    for len in 0..map.len() {
        let need = match len {
            0 | 1 => 2,
            2..=7 => 8,
            _ => 16,
        };
        assert_eq!(Response::decode(&map[..len]), Err(DecodeError::Truncated { len, need }));
    }
    let external = [0, 128, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
    assert_eq!(
        Response::decode(&external[..11]),
        Err(DecodeError::Truncated { len: 11, need: 12 })
    );
    assert_eq!(Request::decode(&[0, 1, 0]), Err(DecodeError::Truncated { len: 3, need: 12 }));
    // Trailing bytes are ignored.
    let mut long = map.to_vec();
    long.extend_from_slice(&[1, 2, 3]);
    assert_eq!(Response::decode(&long), Response::decode(&map));
}

#[test]
fn garbage() {
    // A PCP response (version 2).
    assert_eq!(Response::decode(&[2, 0x80, 0, 1, 0, 0, 0, 0]), Err(DecodeError::Version(2)));
    // A request where a response is expected, and the reverse.
    assert_eq!(Response::decode(&[0, 1, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Direction(1)));
    assert_eq!(Request::decode(&[0, 130]), Err(DecodeError::Direction(130)));
    // Unknown opcodes: a success needs a known one; a failure is kept whatever the opcode.
    assert_eq!(
        Response::decode(&[0, 0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::UnknownOpcode(3))
    );
    assert_eq!(
        Response::decode(&[0, 0xff, 0, 5, 0, 0, 0, 1]),
        Ok(Response::Failure { opcode: 0x7f, epoch: 1, error: NatPmpError::UnsupportedOpcode })
    );
    assert_eq!(Request::decode(&[0, 9]), Err(DecodeError::UnknownOpcode(9)));
}

fn protocol() -> impl Strategy<Value = MapProtocol> {
    prop_oneof![Just(MapProtocol::Tcp), Just(MapProtocol::Udp)]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(epoch, address)| Response::ExternalAddress {
            epoch,
            address: Ipv4Addr::from(address),
        }),
        (any::<u32>(), protocol(), any::<u16>(), any::<u16>(), any::<u32>()).prop_map(
            |(epoch, protocol, internal_port, external_port, lifetime)| Response::Map {
                epoch,
                protocol,
                internal_port,
                external_port,
                lifetime,
            }
        ),
        (0u8..128, any::<u32>(), 1u16..).prop_map(|(opcode, epoch, code)| Response::Failure {
            opcode,
            epoch,
            error: NatPmpError::from_code(code).unwrap(),
        }),
    ]
}

proptest! {
    #[test]
    fn decoding_never_panics_and_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        crate::fuzzing::natpmp_response(&data);
    }

    #[test]
    fn near_valid_input_never_panics(
        mut data in proptest::collection::vec(any::<u8>(), 0..20),
        op in 0u8..3,
    ) {
        if data.len() >= 2 {
            data[0] = 0;
            data[1] = 0x80 | op;
        }
        crate::fuzzing::natpmp_response(&data);
    }

    #[test]
    fn responses_round_trip(response in response()) {
        prop_assert_eq!(Response::decode(&response.encode()), Ok(response));
    }

    #[test]
    fn requests_round_trip(
        protocol in protocol(), internal_port: u16, external_port: u16, lifetime: u32
    ) {
        let request = Request::Map { protocol, internal_port, external_port, lifetime };
        prop_assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
}
