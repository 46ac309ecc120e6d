#![no_main]
//! NAT-PMP response decoder (RFC 6886): decode, encode, decode must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_nat::fuzzing::natpmp_response(data));
