#![no_main]
//! The listener's refusal record, as a dialler decodes it: decode, then encode, must agree.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_secure::fuzzing::refusal_record(data));
