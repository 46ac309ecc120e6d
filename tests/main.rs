//! Integration tests: real nodes over real loopback sockets, one binary of modules.
//! Long tests are `#[ignore]` and run by CI in release mode (`cargo test --release -- --ignored`).

mod access;
mod conformance;
mod custom_protocol;
mod fuzz_corpus;
mod hostile;
mod lanes;
mod large;
mod limits;
mod liveness;
mod many;
mod messaging;
mod nat;
mod node_api;
mod quic_aioquic;
mod races;
mod raw;
mod robustness;
mod tls_openssl;
