//! The sensor firmware's signing core (`no_std`).
//!
//! Skeleton only: the signing core and the `sensor-sim` host binary are built in issue #4.
//! It already links `provenance-core` without its `std` feature, which keeps the firmware
//! subset of the core honest in every build.
#![no_std]

pub use provenance_core::VERSION as CORE_VERSION;
