//! The auditor's checks, step by step, with only the auditor's trust anchors: the code behind
//! `ledger-verify bundle` and the browser's "Verify in this browser" (the same steps, names and
//! verdicts, because it is the same code).
//!
//! - [`trust`]: what the auditor brings (the log key, issuer CA certificates, witness keys and a
//!   quorum, kept checkpoints) and the checkpoint checks.
//! - [`registry`]: the registry rebuilt from the logged events an auditor has.
//! - [`bundle`]: one evidence bundle verified ([`bundle::verify_bundle`]).
//! - [`report`]: the named steps and the verdict.
//! - [`shard`]: a time-sharded log's shard: its start and period, for bundles and archives.
//! - [`home`]: the owner's app in private mode: a household feed verified and decrypted with
//!   the household's recipient key, with key transparency and replay checks.

pub mod bundle;
pub mod home;
pub mod registry;
pub mod report;
pub mod shard;
pub mod trust;
