//! # ledger-verify
//!
//! The auditor's offline verifier. It trusts only what the auditor brings ([`trust::Trust`]:
//! the log's vkey, the issuers' CA certificates, optionally witness keys and kept checkpoints)
//! and checks, step by step ([`report::Report`]):
//!
//! - an evidence bundle ([`bundle`]): the checkpoint's signature (and witnesses, and no fork
//!   against kept checkpoints), inclusion of the reading and of every registry entry, both
//!   certificates against the issuers, enrollment, binding and non-revocation at the reading's
//!   time, the sensor's signature and the gateway's countersignature;
//! - a log archive ([`export`]), in parallel: that it is exactly the log's range (every index
//!   once, and the leaves reproduce the checkpoint's root from the frontier), then every reading
//!   as above with batch signature verification;
//! - two checkpoints and a consistency proof ([`consistency`]), from files or fetched online;
//! - a live log ([`monitor`]): every new checkpoint proved consistent from the public tiles, and
//!   every registry change reported (the one online command besides `consistency --url`).
//!
//! It depends on `provenance-core` only (no service code), so the auditor's trust base is small.

pub use provenance_core::audit::{bundle, registry, report, trust};
pub mod consistency;
pub mod export;
pub mod files;
pub mod findings;
pub mod monitor;
