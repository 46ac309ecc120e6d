#![no_main]
//! The peer manager driven by operation sequences, with invariants checked after each step.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_peers::fuzzing::operations(data));
