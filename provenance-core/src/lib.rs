//! # provenance-core
//!
//! Every byte format and every cryptographic check of the vital-sign provenance ledger, in one
//! place: the sensor, gateway, service and verifier call this crate and re-implement nothing.
//!
//! - [`cert`]: X.509 v3 device certificates with Ed25519 keys: issue, parse, chain checks.
//! - [`reading`]: the sensor reading (deterministic CBOR, LOINC + UCUM).
//! - [`cose`]: the sensor's COSE_Sign1 and the gateway's countersigning envelope.
//! - [`keys`]: key identifiers, strict Ed25519 and a batch verifier that names bad signatures.
//! - [`registry`] and [`log_entry`]: registry events and the log's leaf data.
//! - [`registry_state`]: the registry state machine — the one place a registry question is
//!   decided (service, gateway and verifier all run it) — and [`registry_state::Refusal`], the
//!   one list of reasons a reading is refused.
//! - [`merkle`]: RFC 9162 hashing, proof generation from a [`merkle::HashReader`], and proof
//!   verification exactly per RFC 9162 §2.1.3.2 / §2.1.4.2.
//! - [`note`], [`checkpoint`], [`tlog_proof`]: C2SP signed notes, checkpoints and tlog-proofs.
//! - [`witness`]: the C2SP `tlog-witness` protocol (`add-checkpoint`) and a witness's decision.
//! - [`shard`]: time-sharded logs: periods, shard origins, the shard start and carried entries.
//! - [`tiles`]: C2SP tlog-tiles paths.
//! - [`webhook`]: Standard Webhooks signatures.
//! - [`bundle`]: the versioned JSON evidence bundle an auditor verifies offline, and
//!   [`audit`]: the auditor's step-by-step verification of it (run by `ledger-verify` and, compiled
//!   to WebAssembly, in the browser).
//! - [`batch`]: the ingest batch (the CBOR body of `POST /v1/ingest`), decoded within limits.
//! - [`sensor`]: allocation-free encoding and signing of a reading, for firmware.
//!
//! Design: no I/O, no async, no clock (callers pass times in Unix milliseconds), `no_std` +
//! `alloc` without the default `std` feature so the firmware links the same code. Every decoder
//! is strict: size limits first, then exact structure, and deterministic encodings are checked
//! by re-encoding and comparing bytes.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod archive;
pub mod audit;
pub mod batch;
pub mod bundle;
pub mod cbor;
pub mod cert;
pub mod checkpoint;
pub mod cose;
pub mod feed;
pub mod keys;
pub mod log_entry;
pub mod merkle;
pub mod note;
pub mod private;
pub mod reading;
pub mod registry;
pub mod registry_state;
pub mod scenario;
pub mod sensor;
pub mod shard;
pub mod smt;
pub mod tiles;
pub mod tlog_proof;
pub mod webhook;
pub mod witness;

/// Version of this crate, for diagnostics.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
