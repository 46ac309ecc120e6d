#![no_main]
//! PCP response decoder (RFC 6887): decode, encode, decode must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_nat::fuzzing::pcp_response(data));
