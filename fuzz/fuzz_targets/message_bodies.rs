#![no_main]
//! Disconnect, control hello, open-stream and perf bodies.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_codec::fuzzing::message_bodies(data));
