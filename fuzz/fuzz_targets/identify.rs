#![no_main]
//! Identify bodies: decode, encode, decode must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_codec::fuzzing::identify(data));
