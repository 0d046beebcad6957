//! The service's use of the registry state machine (`provenance_core::registry_state`): it
//! decides nothing itself.
//!
//! - [`Registry`] is the sequencer's authoritative copy: rebuilt at start by replaying every
//!   logged registry event, changed only by [`Registry::apply`] on the single writer, and asked
//!   about every reading at the exact log position and logged-at the reading gets
//!   ([`Registry::admit`]), so the service never logs a reading its own evidence fails.
//! - Handlers read a snapshot ([`RegistryState`] behind an `Arc` in `Shared`) to refuse early
//!   what cannot pass ([`precheck`]) and to pick the keys to batch-verify signatures with; the
//!   sequencer's answer is the one that counts.

use crate::db::Db;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::private::PrivateEnvelope;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::EventRefusal;
pub use provenance_core::registry_state::Refusal as Reject;
use provenance_core::registry_state::{
    PrivateClaims, PrivateVerdict, ReadingClaims, RegistryState, Sequences, Verdict,
};

/// Time plausibility bounds the service adds at ingest (the state machine's own bounds are
/// relative to logged-at; these are relative to the service's clock).
#[derive(Debug, Clone, Copy)]
pub struct TimePolicy {
    /// Allowed clock skew into the future, ms.
    pub max_skew_ms: u64,
    /// Oldest accepted reading, ms before now.
    pub max_age_ms: u64,
}

/// Largest sequence number stored (PostgreSQL `BIGINT`, with room).
const MAX_SEQ: u64 = 1 << 62;

/// The registry as of log size `size`: the logged registry events before it, replayed (a log
/// whose events break the rules is refused).
pub async fn state_at(db: &Db, size: u64) -> anyhow::Result<RegistryState> {
    let mut state = RegistryState::new();
    for (idx, leaf) in db.registry_entries_before(size).await? {
        let entry =
            LogEntry::from_cbor(&leaf).map_err(|e| anyhow::anyhow!("registry entry {idx}: {e}"))?;
        let DecodedBody::Registry(ev) = entry
            .decode_body()
            .map_err(|e| anyhow::anyhow!("registry entry {idx}: {e}"))?
        else {
            anyhow::bail!("entry {idx} is stored as a registry event but holds a reading");
        };
        state
            .apply(idx, entry.logged_at_ms, &ev)
            .map_err(|e| anyhow::anyhow!("registry entry {idx} breaks the registry rules: {e}"))?;
    }
    Ok(state)
}

/// The service's policy checks, then the state machine's verdict on the snapshot `state` as if
/// the reading were logged now after everything logged so far.
pub fn precheck(
    state: &RegistryState,
    env: &GatewayEnvelope,
    now_ms: u64,
    policy: TimePolicy,
) -> Result<Verdict, Reject> {
    let c = ReadingClaims::of(env);
    if c.received_at_ms > now_ms.saturating_add(policy.max_skew_ms)
        || c.measured_at_ms > c.received_at_ms.saturating_add(policy.max_skew_ms)
        || c.measured_at_ms.saturating_add(policy.max_age_ms) < now_ms
        || c.seq >= MAX_SEQ
    {
        return Err(Reject::ImplausibleTime);
    }
    state.check(u64::MAX, now_ms, &c)
}

/// The key of a gateway's private message numbers in the sequence rule (a space: no device id
/// has one, so it never meets a sensor's).
fn private_seq_key(gateway_id: &str) -> String {
    format!("private {gateway_id}")
}

/// The service's policy checks on a private envelope, then the state machine's verdict on the
/// snapshot as if it were logged now.
pub fn precheck_private(
    state: &RegistryState,
    env: &PrivateEnvelope,
    now_ms: u64,
    policy: TimePolicy,
) -> Result<PrivateVerdict, (Reject, String)> {
    if env.received_at_ms > now_ms.saturating_add(policy.max_skew_ms)
        || env.received_at_ms.saturating_add(policy.max_age_ms) < now_ms
        || env.msg_seq >= MAX_SEQ
    {
        return Err((
            Reject::ImplausibleTime,
            Reject::ImplausibleTime.description().into(),
        ));
    }
    state.check_private(u64::MAX, now_ms, &PrivateClaims::of(env))
}

/// The sequencer's registry: the state machine's state and the per-sensor sequence rule.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    state: RegistryState,
    seqs: Sequences,
}

/// A sequence number recorded by [`Registry::admit`], to undo if the batch does not commit.
#[derive(Debug)]
pub struct SeqUndo(String, Option<u64>);

impl Registry {
    /// Rebuilds the registry from storage: every logged registry event replayed in log order
    /// (a log whose events break the rules refuses to start), and each sensor's highest logged
    /// sequence number.
    pub async fn load(db: &Db) -> anyhow::Result<Self> {
        let mut reg = Self {
            state: state_at(db, u64::MAX >> 2).await?,
            seqs: Sequences::default(),
        };
        for (sensor, seq) in db.max_seqs().await? {
            let _ = reg.seqs.observe(&sensor, seq);
        }
        for (gateway, seq) in db.max_private_seqs().await? {
            let _ = reg.seqs.observe(&private_seq_key(&gateway), seq);
        }
        Ok(reg)
    }

    /// The state (for a snapshot).
    pub fn state(&self) -> &RegistryState {
        &self.state
    }

    /// Applies an event to be logged at `idx`, `logged_at_ms`, or says why it is refused.
    pub fn apply(
        &mut self,
        idx: u64,
        logged_at_ms: u64,
        event: &RegistryEvent,
    ) -> Result<(), EventRefusal> {
        self.state.apply(idx, logged_at_ms, event)
    }

    /// The verdict on a reading that would be logged at `idx`, `logged_at_ms`; if accepted,
    /// its sequence number is recorded (undo with [`Registry::undo`] if the batch fails).
    pub fn admit(
        &mut self,
        idx: u64,
        logged_at_ms: u64,
        claims: &ReadingClaims<'_>,
    ) -> Result<(Verdict, SeqUndo), Reject> {
        let verdict = self.state.check(idx, logged_at_ms, claims)?;
        let before = self.seqs.last(claims.sensor_id);
        self.seqs.observe(claims.sensor_id, claims.seq)?;
        Ok((verdict, SeqUndo(claims.sensor_id.to_string(), before)))
    }

    /// The verdict on a private message that would be logged at `idx`, `logged_at_ms`; if
    /// accepted, its gateway's message number is recorded (strictly increasing per gateway, like
    /// a sensor's sequence number; undo with [`Registry::undo`]).
    pub fn admit_private(
        &mut self,
        idx: u64,
        logged_at_ms: u64,
        claims: &PrivateClaims<'_>,
        msg_seq: u64,
    ) -> Result<(PrivateVerdict, SeqUndo), Reject> {
        let verdict = self
            .state
            .check_private(idx, logged_at_ms, claims)
            .map_err(|(r, _)| r)?;
        let key = private_seq_key(&verdict.gateway_id);
        let before = self.seqs.last(&key);
        self.seqs.observe(&key, msg_seq)?;
        Ok((verdict, SeqUndo(key, before)))
    }

    /// Undoes the sequence numbers a failed batch recorded (in reverse order).
    pub fn undo(&mut self, undo: Vec<SeqUndo>) {
        for SeqUndo(sensor, before) in undo.into_iter().rev() {
            self.seqs.reset(&sensor, before);
        }
    }
}

/// The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
/// through the service's own registry — the sequencer's copy, which judges every reading at the
/// log position and logged-at it gets: every event applied or refused, every reading accepted
/// (with its patient) or refused with the same code as the state machine's.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures
mod scenarios {
    use super::Registry;
    use provenance_core::registry_state::ReadingClaims;
    use provenance_core::scenario;
    use std::cell::RefCell;

    #[test]
    fn the_service_reaches_every_expected_verdict() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../provenance-core/testdata/registry-scenarios.json"
        );
        let scenarios = scenario::parse(&std::fs::read(path).unwrap()).unwrap();
        assert!(scenarios.len() >= 12);
        let mut readings = 0;
        for s in &scenarios {
            let reg = RefCell::new(Registry::default());
            readings += scenario::drive(
                s,
                |e| {
                    let got = reg.borrow_mut().apply(e.index, e.logged_at_ms, &e.event);
                    assert_eq!(
                        got.is_ok(),
                        e.applied,
                        "{}: event {}: {got:?}",
                        s.name,
                        e.index
                    );
                },
                |r| {
                    let got = reg.borrow_mut().admit(
                        r.index,
                        r.logged_at_ms,
                        &ReadingClaims::of(&r.decoded),
                    );
                    let what = format!("{}: reading at {}", s.name, r.index);
                    assert_eq!(got.as_ref().map(drop).map_err(|r| *r), r.verdict, "{what}");
                    assert_eq!(got.ok().and_then(|(v, _)| v.patient), r.patient, "{what}");
                },
                |r| {
                    let got = reg
                        .borrow()
                        .state()
                        .revocation_check(r.logged_at_ms, &ReadingClaims::of(&r.decoded))
                        .map(drop)
                        .map_err(|(r, _)| r);
                    assert_eq!(
                        got, r.at_end,
                        "{}: reading at {} at the end",
                        s.name, r.index
                    );
                },
            );
        }
        assert!(readings >= 30, "{readings} readings");
    }
}
