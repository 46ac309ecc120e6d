#![no_main]
//! Noise handshake identity payload: decode, encode, decode must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_secure::fuzzing::handshake_payload(data));
