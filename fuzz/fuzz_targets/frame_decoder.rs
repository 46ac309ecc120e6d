#![no_main]
//! Frame decoder: chunked decode; decode, encode, decode must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_codec::fuzzing::frame_decoder(data));
