#![no_main]
//! The TLS certificate check both verifiers run on a remote's certificate (DER X.509 with the
//! sinew identity extension): never panics; what passes passes again with the same identity.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sinew_secure::fuzzing::tls_certificate(data));
