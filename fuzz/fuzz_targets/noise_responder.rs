#![no_main]
//! The sans-IO Noise responder fed arbitrary preamble and messages: never panics.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_secure::fuzzing::responder(data));
