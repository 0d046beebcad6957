//! `ledger-service`: Cloud service: registry, verified ingest, Merkle log, checkpoints, proofs, alerts and exports.
//!
//! Skeleton only: the program is built in issue #3 (see ARCHITECTURE.md).

fn main() -> std::process::ExitCode {
    eprintln!(
        "ledger-service: not built yet (issue #3); provenance-core {}",
        provenance_core::VERSION
    );
    std::process::ExitCode::from(2)
}
