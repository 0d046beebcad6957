//! `gateway-uplink`: Gateway: verifies sensor frames, raises local alarms, countersigns, spools and uploads.
//!
//! Skeleton only: the program is built in issue #4 (see ARCHITECTURE.md).

fn main() -> std::process::ExitCode {
    eprintln!(
        "gateway-uplink: not built yet (issue #4); provenance-core {}",
        provenance_core::VERSION
    );
    std::process::ExitCode::from(2)
}
