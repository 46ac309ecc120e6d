#![no_main]
//! The port-mapping lifecycle state machine driven by operation sequences.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_nat::fuzzing::lifecycle_operations(data));
