//! The committed fuzz seed corpus (`fuzz/corpus/<target>/`) is generated here, from the real
//! encoders, so it follows the wire format. This test fails when a committed seed no longer
//! matches what the encoders produce; `SINEW_WRITE_SEEDS=1 cargo test -p sinew-tests
//! fuzz_seed_corpus` rewrites them.

use std::path::PathBuf;

use bytes::Bytes;
use sinew_codec::messages::{
    ControlHello, Disconnect, DisconnectCode, Identify, MessageBody as _, OpenStream, Perf,
};
use sinew_codec::{Frame, FrameKind, Opcode, OpcodeRange, Status};
use sinew_transport::NoiseSuite;
use sinew_types::{Keypair, SignedPeerRecord, SigningDomain};

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let op = Opcode::app(1000).unwrap();
    let kinds = [
        FrameKind::Message,
        FrameKind::Acked { id: 1 },
        FrameKind::Request { id: 2 },
        FrameKind::Response { id: 3 },
        FrameKind::Error { id: 4, status: Status::BUSY },
    ];
    // Frame decoder: the first byte is the chunk size the harness feeds.
    for (i, kind) in kinds.into_iter().enumerate() {
        for (checksum, large) in [(false, false), (true, false), (false, true), (true, true)] {
            let frame = Frame {
                opcode: op,
                kind,
                checksum,
                large,
                payload: Bytes::from(vec![i as u8; 16 + i]),
            };
            let mut bytes = vec![7u8];
            bytes.extend_from_slice(&frame.to_bytes());
            bytes.extend_from_slice(
                &Frame::message(Opcode::PING, Bytes::from_static(b"next")).to_bytes(),
            );
            out.push((
                "frame_decoder",
                format!("kind{i}-c{}-l{}", checksum as u8, large as u8),
                bytes,
            ));
        }
    }
    let key = Keypair::from_secret_bytes([7; 32]);
    let identify = Identify {
        protocol_version: 1,
        agent: "sinew/0.1.0".into(),
        boot_nonce: 99,
        listen_addrs: vec![
            "tcp://127.0.0.1:4001".parse().unwrap(),
            "tcp://[::1]:4001".parse().unwrap(),
        ],
        observed_addr: Some("tcp://10.0.0.7:51000".parse().unwrap()),
        role: "admin".into(),
        opcodes: vec![
            OpcodeRange::single(Opcode::PING),
            OpcodeRange::new(op, Opcode::app(1100).unwrap()).unwrap(),
        ],
        record: Some(
            SignedPeerRecord::sign(
                &key,
                vec!["tcp://127.0.0.1:4001".parse().unwrap()],
                1_700_000_000_000,
            )
            .unwrap(),
        ),
    };
    out.push(("identify", "full".into(), identify.encode().to_vec()));
    let minimal = Identify {
        listen_addrs: vec![],
        observed_addr: None,
        opcodes: vec![],
        record: None,
        ..identify
    };
    out.push(("identify", "minimal".into(), minimal.encode().to_vec()));
    let bodies: [(u8, &str, Bytes); 4] = [
        (
            0,
            "disconnect",
            Disconnect { code: DisconnectCode::DUPLICATE, message: "dup".into() }.encode(),
        ),
        (1, "control-hello", ControlHello { version: 1 }.encode()),
        (2, "open-stream", OpenStream { opcode: op }.encode()),
        (3, "perf", Perf { upload: 1 << 30, download: 0 }.encode()),
    ];
    for (selector, name, body) in bodies {
        let mut bytes = vec![selector];
        bytes.extend_from_slice(&body);
        out.push(("message_bodies", name.into(), bytes));
    }
    // Noise identity payload: version, identity key, signature over a static key, boot nonce,
    // extensions.
    let static_key = [9u8; 32];
    let signature = key.sign(SigningDomain::NOISE_HANDSHAKE, &static_key);
    let mut payload = vec![1u8];
    payload.extend_from_slice(key.peer_id().as_bytes());
    payload.extend_from_slice(&signature.0);
    payload.extend_from_slice(&42u64.to_le_bytes());
    payload.extend_from_slice(&0u16.to_le_bytes());
    out.push(("noise_payload", "valid".into(), payload.clone()));
    payload.truncate(payload.len() - 2);
    payload.extend_from_slice(&3u16.to_le_bytes());
    payload.extend_from_slice(b"ext");
    out.push(("noise_payload", "with-extension".into(), payload));
    // Noise responder: preamble, then message 1 (a 32-byte ephemeral key, framed u16 BE).
    for suite in [NoiseSuite::ChaChaPoly, NoiseSuite::AesGcm] {
        let mut bytes = b"SINEW\x01".to_vec();
        bytes.extend_from_slice(&[suite.id(), 0, 0, 32]);
        bytes.extend_from_slice(&[0x42; 32]);
        out.push(("noise_responder", format!("preamble-msg1-suite{}", suite.id()), bytes));
    }
    // Refusal records: every limit, with and without retry advice.
    for code in 1..=5u8 {
        let limit = sinew_transport::RefusedLimit::from_code(code);
        for after in [None, Some(std::time::Duration::from_secs(3))] {
            let refused = sinew_transport::Refused { limit, retry_after: after };
            let name = format!("limit{code}-after{}", after.map_or(0, |d| d.as_secs()));
            out.push(("refusal_record", name, sinew_secure::encode_refusal(refused).to_vec()));
        }
    }
    // NAT-PMP responses (RFC 6886, big-endian): external address, TCP map, a failure.
    let mut pmp = vec![0u8, 128, 0, 0];
    pmp.extend_from_slice(&7u32.to_be_bytes());
    pmp.extend_from_slice(&[100, 128, 0, 1]);
    out.push(("natpmp_response", "external-address".into(), pmp));
    let mut pmp = vec![0u8, 130, 0, 0];
    pmp.extend_from_slice(&7u32.to_be_bytes());
    pmp.extend_from_slice(&4001u16.to_be_bytes());
    pmp.extend_from_slice(&4001u16.to_be_bytes());
    pmp.extend_from_slice(&3600u32.to_be_bytes());
    out.push(("natpmp_response", "map-tcp".into(), pmp));
    let mut pmp = vec![0u8, 129, 0, 2];
    pmp.extend_from_slice(&7u32.to_be_bytes());
    out.push(("natpmp_response", "not-authorized".into(), pmp));
    // PCP responses (RFC 6887): ANNOUNCE, and MAP with its 36-byte opcode data.
    let header = |opcode: u8, result: u8, lifetime: u32| {
        let mut h = vec![2u8, 0x80 | opcode, 0, result];
        h.extend_from_slice(&lifetime.to_be_bytes());
        h.extend_from_slice(&42u32.to_be_bytes()); // epoch
        h.extend_from_slice(&[0u8; 12]);
        h
    };
    out.push(("pcp_response", "announce".into(), header(0, 0, 0)));
    let mut map = header(1, 0, 3600);
    map.extend_from_slice(&[0x5a; 12]); // nonce
    map.extend_from_slice(&[6, 0, 0, 0]); // TCP, reserved
    map.extend_from_slice(&4001u16.to_be_bytes());
    map.extend_from_slice(&4001u16.to_be_bytes());
    map.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 100, 128, 0, 1]);
    out.push(("pcp_response", "map-tcp".into(), map));
    out.push(("pcp_response", "no-resources".into(), header(1, 8, 0)));
    out.push(("nat_lifecycle", "ascending".into(), (0..=255u8).collect()));
    out.push(("nat_lifecycle", "repeated".into(), [2u8, 7, 1, 8, 2, 8].repeat(40)));
    // Peer manager operation sequences.
    out.push(("peers_operations", "ascending".into(), (0..=255u8).collect()));
    out.push(("peers_operations", "repeated".into(), [3u8, 1, 4, 1, 5, 9, 2, 6].repeat(32)));
    out
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = std::env::var_os("SINEW_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = root.join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing fuzz seeds (rewrite with SINEW_WRITE_SEEDS=1): {stale:?}"
    );
}
