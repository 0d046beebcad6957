//! `ledger-verify`: Offline auditor tool: verifies evidence bundles, export archives and checkpoints.
//!
//! Skeleton only: the program is built in issue #5 (see ARCHITECTURE.md).

fn main() -> std::process::ExitCode {
    eprintln!(
        "ledger-verify: not built yet (issue #5); provenance-core {}",
        provenance_core::VERSION
    );
    std::process::ExitCode::from(2)
}
