//! The owner's app's verification (`audit::home::verify_feed`) against a log an operator writes
//! as it likes (it holds the log key): every lie about a household's messages or its registry
//! history is refused, with the step that catches it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use common::*;
use provenance_core::audit::home::{verify_feed, FeedCheck, HomeState};
use provenance_core::audit::trust::Trust;
use provenance_core::bundle::{ProvedEntry, SubjectProof};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::SignedReading;
use provenance_core::feed::{HouseholdFeed, FEED_MEDIA_TYPE};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::private::{RecipientSecret, Seal};
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{registry_extension, RegistryState, Subject};
use provenance_core::tlog_proof::TlogProof;

const HOUR: u64 = 3_600_000;

struct Log {
    f: Fixture,
    entries: Vec<LogEntry>,
    state: RegistryState,
    msg_seq: u64,
}

impl Log {
    /// Both issuers, the sensor and the gateway, the binding, alice's phone as the household's
    /// recipient and the gateway bound to the household.
    fn new() -> Self {
        let f = fixture();
        let mut log = Self {
            entries: Vec::new(),
            state: RegistryState::new(),
            msg_seq: 0,
            f,
        };
        let mut events = registry_events(&log.f);
        events.truncate(4); // issuer, sensor, gateway, binding
        events.insert(1, fleet_enrollment(&log.f));
        for e in events {
            log.event(e);
        }
        log.event(RegistryEvent::EnrollRecipient {
            household: HOUSEHOLD.into(),
            name: "alice-phone".into(),
            key: alice().public(),
            from_ms: T0,
        });
        log.event(RegistryEvent::BindHousehold {
            gateway_id: "GW-0001".into(),
            household: HOUSEHOLD.into(),
            from_ms: T0,
        });
        log
    }

    fn at(&self) -> u64 {
        T0 + HOUR + self.entries.len() as u64 * 1000
    }

    fn event(&mut self, e: RegistryEvent) -> u64 {
        let i = self.entries.len() as u64;
        let at = self.at();
        self.state.apply(i, at, &e).unwrap();
        self.entries.push(LogEntry {
            kind: EntryKind::Registry,
            body: e.to_cbor().unwrap(),
            logged_at_ms: at,
        });
        i
    }

    /// Logs the bytes as a private message (whatever they are: the operator writes the log).
    fn log_private(&mut self, body: Vec<u8>) -> u64 {
        let i = self.entries.len() as u64;
        let at = self.at();
        self.entries.push(LogEntry {
            kind: EntryKind::Private,
            body,
            logged_at_ms: at,
        });
        i
    }

    /// What the honest gateway sends for sensor reading `seq`, to `to`.
    fn sealed(&mut self, seq: u64, to: &[&RecipientSecret]) -> Vec<u8> {
        self.msg_seq += 1;
        let sensor = SignedReading::sign(&reading(seq), &self.f.sensor_key).unwrap();
        let keys: Vec<_> = to.iter().map(|s| s.public()).collect();
        Seal {
            gateway: &self.f.gateway_key,
            received_at_ms: self.at() - 500,
            household: HOUSEHOLD,
            msg_seq: self.msg_seq,
        }
        .seal(&sensor, &keys, &mut TestRng::new(&format!("home {seq}")))
        .unwrap()
    }

    fn send(&mut self, seq: u64, to: &[&RecipientSecret]) -> u64 {
        let b = self.sealed(seq, to);
        self.log_private(b)
    }

    /// A feed page of the messages at `indices`, proved against a checkpoint of the whole log,
    /// with the household's registry as the honest service gives it, minus `omit`.
    fn page(&self, indices: &[u64], omit: &[u64]) -> Vec<u8> {
        let mut tree = MemoryTree::new();
        let leaves: Vec<Vec<u8>> = self.entries.iter().map(LogEntry::to_cbor).collect();
        for l in &leaves {
            tree.push_data(l);
        }
        let size = tree.size();
        let note = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: tree.root_at(size).unwrap(),
            extensions: vec![registry_extension(
                self.state.event_count(),
                &self.state.registry_root(),
            )],
        }
        .sign(&self.f.log)
        .unwrap();
        let proved = |i: u64| {
            ProvedEntry::new(
                &leaves[i as usize],
                &TlogProof {
                    extra: None,
                    index: i,
                    hashes: merkle::inclusion_proof(&tree, i, size).unwrap(),
                    checkpoint: note.clone(),
                },
            )
        };
        let subjects = self.state.subjects_for_household(HOUSEHOLD);
        let mut reg: Vec<u64> = subjects
            .iter()
            .flat_map(|s| self.state.events_of(s))
            .collect();
        reg.sort_unstable();
        reg.dedup();
        reg.retain(|i| !omit.contains(i));
        HouseholdFeed {
            media_type: FEED_MEDIA_TYPE.into(),
            log_vkey: self.f.log.verifier().to_vkey(),
            household: HOUSEHOLD.into(),
            messages: indices.iter().map(|i| proved(*i)).collect(),
            registry: reg.into_iter().map(proved).collect(),
            registry_proofs: subjects
                .iter()
                .map(|s| SubjectProof::of(&self.state, s))
                .collect(),
            next_after: None,
        }
        .to_json()
    }

    fn trust(&self) -> Trust {
        Trust::pinned(
            &self.f.log.verifier().to_vkey(),
            &[&self.f.ca.to_pem(), &self.f.fleet.to_pem()],
            &[],
            0,
            Vec::new(),
        )
        .unwrap()
    }
}

fn alice() -> RecipientSecret {
    recipient("alice-phone")
}

fn fresh_state() -> HomeState {
    HomeState {
        household: HOUSEHOLD.into(),
        ..HomeState::default()
    }
}

fn check(log: &Log, page: &[u8], state: &mut HomeState) -> FeedCheck {
    verify_feed(page, &log.trust(), &alice(), state)
}

/// The failed steps of message `i` of a checked page.
fn failed(c: &FeedCheck, i: usize) -> Vec<String> {
    c.messages[i]
        .report
        .failed_steps()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn honest_messages_decrypt_and_verify_and_the_state_moves_on() {
    let mut log = Log::new();
    let m: Vec<u64> = (1..=3).map(|s| log.send(s, &[&alice()])).collect();
    let mut state = fresh_state();
    let c = check(&log, &log.page(&m, &[]), &mut state);
    assert!(c.page.verified, "{}", c.page.human());
    for (i, msg) in c.messages.iter().enumerate() {
        let r = msg
            .reading
            .as_ref()
            .unwrap_or_else(|| panic!("{}", msg.report.human()));
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.sensor_id, "SN-0001");
        assert_eq!(r.gateway_id, "GW-0001");
    }
    assert_eq!(state.last_index, Some(m[2]));
    assert_eq!(state.sensor_seq["SN-0001"], 3);
    // Its own enrollment is accepted by itself; the gateway's binding is a change to look at.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("gateway GW-0001 encrypts for the household"));
    // Served again: replays.
    let again = check(&log, &log.page(&m, &[]), &mut state);
    for i in 0..3 {
        assert_eq!(failed(&again, i), ["private.replay"]);
    }
}

#[test]
fn the_same_message_logged_again_later_is_a_replay() {
    let mut log = Log::new();
    let bytes = log.sealed(1, &[&alice()]);
    let first = log.log_private(bytes.clone());
    let second = log.log_private(bytes);
    let mut state = fresh_state();
    let c = check(&log, &log.page(&[first, second], &[]), &mut state);
    assert!(c.messages[0].reading.is_some());
    assert_eq!(failed(&c, 1), ["private.replay"]);
    assert!(c.messages[1]
        .report
        .human()
        .contains("message number 1 is not above 1"));
}

#[test]
fn a_sensor_reading_sent_again_in_a_new_message_is_a_replay() {
    // A compromised gateway (or one replaying frames) wraps an old sensor reading anew.
    let mut log = Log::new();
    let a = log.send(1, &[&alice()]);
    let b = log.send(1, &[&alice()]);
    let mut state = fresh_state();
    let c = check(&log, &log.page(&[a, b], &[]), &mut state);
    assert!(c.messages[0].reading.is_some());
    assert_eq!(failed(&c, 1), ["reading.replay"]);
}

#[test]
fn a_ciphertext_changed_in_the_log_fails_the_gateway_signature() {
    // The operator rewrites the entry (with the log key the tree still proves it).
    let mut log = Log::new();
    let mut bytes = log.sealed(1, &[&alice()]);
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    let i = log.log_private(bytes);
    let c = check(&log, &log.page(&[i], &[]), &mut fresh_state());
    assert!(c.page.verified);
    let steps = failed(&c, 0);
    assert!(
        steps == ["gateway.signature"] || steps == ["private.decode"],
        "{}",
        c.messages[0].report.human()
    );
}

#[test]
fn a_message_sealed_and_signed_by_someone_else_is_refused() {
    // Re-encrypted by whoever read it (the operator with a key of its own), signed with a key
    // that is not an enrolled gateway's.
    let mut log = Log::new();
    let sensor = SignedReading::sign(&reading(1), &log.f.sensor_key).unwrap();
    let forger = key("not a gateway");
    let bytes = Seal {
        gateway: &forger,
        received_at_ms: log.at(),
        household: HOUSEHOLD,
        msg_seq: 9,
    }
    .seal(&sensor, &[alice().public()], &mut TestRng::new("forged"))
    .unwrap();
    let i = log.log_private(bytes);
    let c = check(&log, &log.page(&[i], &[]), &mut fresh_state());
    assert_eq!(failed(&c, 0), ["registry.enrolled"]);
}

#[test]
fn a_recipient_enrolled_behind_the_owners_back_is_reported_and_its_messages_refused() {
    let mut log = Log::new();
    let cloud = recipient("the operator's own key");
    let enrolled = log.event(RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "maintenance".into(),
        key: cloud.public(),
        from_ms: T0,
    });
    let i = log.send(1, &[&alice(), &cloud]);
    let mut state = fresh_state();
    let c = check(&log, &log.page(&[i], &[]), &mut state);
    assert!(c.page.verified, "{}", c.page.human());
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("recipient maintenance")));
    assert!(c.unaccepted.contains(&enrolled));
    assert_eq!(failed(&c, 0), ["private.recipients"]);
    assert!(c.messages[0].report.human().contains("maintenance"));
    // Hiding the enrollment from the app instead: the registry proof of the household fails.
    let hidden = check(&log, &log.page(&[i], &[enrolled]), &mut fresh_state());
    assert!(!hidden.page.verified);
    assert!(hidden.messages.is_empty());
    assert_eq!(
        hidden.page.failed_steps(),
        ["registry.complete"],
        "{}",
        hidden.page.human()
    );
    // Accepted by the owner: shown.
    state.accepted.insert(enrolled);
    let ok = check(&log, &log.page(&[i], &[]), &mut state);
    assert!(
        ok.messages[0].reading.is_some(),
        "{}",
        ok.messages[0].report.human()
    );
}

#[test]
fn a_message_not_encrypted_to_this_apps_key_is_refused() {
    let mut log = Log::new();
    let bob = recipient("bob-phone");
    let enrolled = log.event(RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "bob-phone".into(),
        key: bob.public(),
        from_ms: T0,
    });
    let i = log.send(1, &[&bob]);
    let mut state = fresh_state();
    state.accepted.insert(enrolled);
    let c = check(&log, &log.page(&[i], &[]), &mut state);
    assert_eq!(failed(&c, 0), ["private.for_me"]);
}

#[test]
fn a_swapped_or_revoked_key_and_a_rolled_back_log_are_refused() {
    // The operator replaces alice's key with one of its own (a rotation of her name).
    let mut log = Log::new();
    let swapped = recipient("operator as alice");
    log.event(RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "alice-phone".into(),
        key: swapped.public(),
        from_ms: log.at(),
    });
    let i = log.send(1, &[&swapped]);
    let c = check(&log, &log.page(&[i], &[]), &mut fresh_state());
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("recipient alice-phone reads with key")));
    assert_eq!(failed(&c, 0), ["private.recipients"]);
    // A message to alice's old key after the rotation: not a current recipient.
    let j = log.send(2, &[&alice()]);
    let c = check(&log, &log.page(&[j], &[]), &mut fresh_state());
    assert_eq!(failed(&c, 0), ["registry.recipients"]);
    // Another household's key, or none: the app reads nothing.
    let mut other = HomeState {
        household: "HH-0002".into(),
        ..HomeState::default()
    };
    let c = check(&log, &log.page(&[j], &[]), &mut other);
    assert!(!c.page.verified);
    // A log smaller than one seen before.
    let mut state = fresh_state();
    state.checkpoint_size = 10_000;
    let c = check(&log, &log.page(&[j], &[]), &mut state);
    assert_eq!(c.page.failed_steps(), ["checkpoint.rollback"]);
    // The household subject is proved by its chain.
    assert!(log
        .state
        .chain(&Subject::Household(HOUSEHOLD.into()))
        .is_some());
}

#[test]
fn messages_out_of_order_of_another_household_or_not_private_are_refused() {
    // Cases the checks were not written for one by one: the operator reorders a page, slips in
    // another household's message (signed by the household's own gateway), or a plain entry.
    let mut log = Log::new();
    let a = log.send(1, &[&alice()]);
    let b = log.send(2, &[&alice()]);
    let c = check(&log, &log.page(&[b, a], &[]), &mut fresh_state());
    assert!(c.messages[0].reading.is_some());
    assert_eq!(failed(&c, 1), ["private.replay"]);
    let sensor = SignedReading::sign(&reading(3), &log.f.sensor_key).unwrap();
    let other = Seal {
        gateway: &log.f.gateway_key,
        received_at_ms: log.at(),
        household: "HH-0002",
        msg_seq: 99,
    }
    .seal(&sensor, &[alice().public()], &mut TestRng::new("other"))
    .unwrap();
    let o = log.log_private(other);
    let registry_entry = 0;
    let c = check(
        &log,
        &log.page(&[o, registry_entry], &[]),
        &mut fresh_state(),
    );
    assert_eq!(failed(&c, 0), ["private.decode"]);
    assert_eq!(failed(&c, 1), ["private.decode"]);
    assert!(c.messages.iter().all(|m| m.reading.is_none()));
}
