//! # system-tests
//!
//! The tests that span binaries — the chain from `sensor-sim` through `gateway-uplink` to the
//! service, the gateway's uplink against a real service, `ledger-verify` on real evidence and
//! real exports — and the gateway's backlog-drain benchmark (`examples/drain.rs`). Nothing here
//! is product code: the library is empty, the tests are in `tests/`.
