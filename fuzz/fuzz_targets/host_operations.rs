#![no_main]
//! The protocol host driven by operation sequences (connections, frames of any shape, credit,
//! time, application commands), with invariants checked after each step.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_host::fuzzing::operations(data));
