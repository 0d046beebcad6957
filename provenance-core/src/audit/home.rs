//! The owner's app (private mode): a household feed page verified with only the log's key, the
//! trusted issuers and the household's own recipient key — not the cloud.
//!
//! For the page: the checkpoint (log key, witnesses), every registry entry's inclusion, the
//! registry replayed by the rules, and the complete history of every subject that decides the
//! household's messages proved in the checkpoint's registry map. Then **key transparency**: the
//! household's history (its recipients, their keys, their revocations, its gateways) against
//! the events this app has accepted — anything else is a change made without it, reported.
//!
//! For each message, in log order: inclusion; the envelope; not a replay (log index, the
//! gateway's message number and the sensor's sequence number each above what this app has
//! shown); what the cloud checked, checked again (the gateway's key, its household, every
//! recipient current); every recipient one this app has accepted; the gateway's signature over
//! the ciphertext; encrypted to this app's key; decrypted; then the reading as an auditor checks
//! a plain one (times, enrollment, certificates, trusted issuers, binding, revocations, the
//! sensor's signature). A message that fails any step is not shown, and says why.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::audit::bundle::included;
use crate::audit::registry::{KeyUse, RegistryView};
use crate::audit::report::Report;
use crate::audit::trust::Trust;
use crate::checkpoint::Checkpoint;
use crate::feed::HouseholdFeed;
use crate::keys::KeyId;
use crate::log_entry::{DecodedBody, LogEntry};
use crate::private::{PrivateError, RecipientSecret};
use crate::registry::RegistryEvent;
use crate::registry_state::{PrivateClaims, ReadingClaims, Subject};

/// What the app remembers between pages (its state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeState {
    /// The household.
    pub household: String,
    /// Log indices of the household's registry events this app has accepted: its own key's
    /// enrollment, and any change its owner looked at and accepted.
    pub accepted: BTreeSet<u64>,
    /// The last message shown, by log index.
    pub last_index: Option<u64>,
    /// The last message number shown, per gateway.
    pub gateway_seq: BTreeMap<String, u64>,
    /// The last sequence number shown, per sensor.
    pub sensor_seq: BTreeMap<String, u64>,
    /// The size of the largest checkpoint seen (a smaller one later is a rollback).
    pub checkpoint_size: u64,
}

/// A verified, decrypted reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomeReading {
    /// Log index.
    pub index: u64,
    /// Logged-at, Unix ms.
    pub logged_at_ms: u64,
    /// Received-at (the gateway's clock), Unix ms.
    pub received_at_ms: u64,
    /// The gateway.
    pub gateway_id: String,
    /// The sensor.
    pub sensor_id: String,
    /// The sensor's sequence number.
    pub seq: u64,
    /// Measured-at (the sensor's claim), Unix ms.
    pub measured_at_ms: u64,
    /// (LOINC, value as signed, UCUM unit).
    pub measurements: Vec<(String, String, String)>,
}

/// One message's verification.
#[derive(Debug, Clone)]
pub struct MessageCheck {
    /// Log index (when it could be read).
    pub index: Option<u64>,
    /// Every step.
    pub report: Report,
    /// The reading, when every step passed.
    pub reading: Option<HomeReading>,
}

/// A page's verification.
#[derive(Debug, Clone)]
pub struct FeedCheck {
    /// The page-level steps.
    pub page: Report,
    /// Registry changes of the household this app has not accepted (key transparency), one
    /// line each.
    pub warnings: Vec<String>,
    /// The household's events on this page not yet accepted (what `accept` would add).
    pub unaccepted: Vec<u64>,
    /// Each message, in log order.
    pub messages: Vec<MessageCheck>,
    /// The next page's `after`.
    pub next_after: Option<u64>,
}

fn describe(idx: u64, ev: &RegistryEvent) -> String {
    match ev {
        RegistryEvent::EnrollRecipient {
            name, key, from_ms, ..
        } => format!(
            "entry {idx}: recipient {name} reads with key {} from {from_ms}",
            key.key_id()
        ),
        RegistryEvent::BindHousehold {
            gateway_id,
            from_ms,
            ..
        } => format!("entry {idx}: gateway {gateway_id} encrypts for the household from {from_ms}"),
        RegistryEvent::Revoke {
            key_id, from_ms, ..
        } => format!("entry {idx}: key {key_id} revoked from {from_ms}"),
        other => format!("entry {idx}: {}", other.type_name()),
    }
}

/// Verifies a feed page (its JSON bytes) for the household's recipient `secret`, with the
/// app's `state`, which it advances past every message shown.
pub fn verify_feed(
    bytes: &[u8],
    trust: &Trust,
    secret: &RecipientSecret,
    state: &mut HomeState,
) -> FeedCheck {
    let mut page = Report::new(format!("household {}", state.household));
    let mut out = FeedCheck {
        page: page.clone(),
        warnings: Vec::new(),
        unaccepted: Vec::new(),
        messages: Vec::new(),
        next_after: None,
    };
    let feed = match HouseholdFeed::from_json(bytes) {
        Ok(f) if f.household == state.household => {
            page.pass(
                "feed.format",
                format!(
                    "{} messages, {} registry entries",
                    f.messages.len(),
                    f.registry.len()
                ),
            );
            f
        }
        Ok(f) => {
            page.fail(
                "feed.format",
                format!(
                    "a page of household {}, not {}",
                    f.household, state.household
                ),
            );
            out.page = page;
            return out;
        }
        Err(e) => {
            page.fail("feed.format", e.to_string());
            out.page = page;
            return out;
        }
    };
    out.next_after = feed.next_after;
    let Some(signed) = feed.checkpoint() else {
        page.pass("feed.empty", "nothing logged for the household yet");
        out.page = page;
        return out;
    };
    let Some(cp) = trust.check_checkpoint(&signed, &mut page) else {
        out.page = page;
        return out;
    };
    if cp.size < state.checkpoint_size {
        page.fail(
            "checkpoint.rollback",
            format!(
                "the checkpoint has {} entries; this app saw one of {} before: the log was rolled back or forked",
                cp.size, state.checkpoint_size
            ),
        );
        out.page = page;
        return out;
    }
    let Some(view) = replay_registry(&feed, &cp, &mut page) else {
        out.page = page;
        return out;
    };
    let required = view.state().subjects_for_household(&state.household);
    page.check(
        "registry.complete",
        view.check_complete_subjects(&cp.extensions, &required, &feed.registry_proofs),
    );
    key_history(&view, &feed, &cp, secret, state, &mut page, &mut out);
    if page.verified {
        for m in &feed.messages {
            let check = verify_message(m, &cp, &view, trust, secret, state);
            out.messages.push(check);
        }
        state.checkpoint_size = state.checkpoint_size.max(cp.size);
    }
    out.page = page;
    out
}

/// Checks every registry entry's inclusion and replays them by the rules.
fn replay_registry(
    feed: &HouseholdFeed,
    cp: &Checkpoint,
    page: &mut Report,
) -> Option<RegistryView> {
    let mut entries = Vec::with_capacity(feed.registry.len());
    for (i, e) in feed.registry.iter().enumerate() {
        match included(e, cp) {
            Ok(x) => entries.push(x),
            Err(why) => {
                page.fail(
                    "registry.inclusion",
                    format!("registry entry #{}: {why}", i + 1),
                );
                return None;
            }
        }
    }
    page.pass(
        "registry.inclusion",
        format!(
            "{} registry entries included in the checkpoint",
            entries.len()
        ),
    );
    if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
        page.fail(
            "registry.decode",
            "the registry entries are not in log order, each once",
        );
        return None;
    }
    let mut view = RegistryView::default();
    for (i, leaf) in &entries {
        let applied = match LogEntry::from_cbor(leaf).and_then(|e| {
            let at = e.logged_at_ms;
            e.decode_body().map(|b| (at, b))
        }) {
            Ok((at, DecodedBody::Registry(ev))) => view.apply(*i, at, &ev),
            Ok(_) => Err(format!("registry entry {i} is not a registry event")),
            Err(e) => Err(format!("registry entry {i}: {e}")),
        };
        if let Err(e) = applied {
            page.fail("registry.decode", e);
            return None;
        }
    }
    page.pass(
        "registry.decode",
        format!(
            "{} registry events replayed by the registry rules",
            view.events()
        ),
    );
    Some(view)
}

/// Key transparency: the household's complete history against what this app accepted.
fn key_history(
    view: &RegistryView,
    feed: &HouseholdFeed,
    cp: &Checkpoint,
    secret: &RecipientSecret,
    state: &mut HomeState,
    page: &mut Report,
    out: &mut FeedCheck,
) {
    let household = Subject::Household(state.household.clone());
    let events = view.state().events_of(&household);
    let me = secret.public().key_id();
    let mine = view
        .state()
        .recipient(&me)
        .filter(|r| r.household == state.household);
    let Some(mine) = mine else {
        page.fail(
            "household.my_key",
            format!(
                "this app's key {me} is not a recipient of {} in the log (checkpoint of {} entries): it reads nothing",
                state.household, cp.size
            ),
        );
        return;
    };
    page.pass(
        "household.my_key",
        format!(
            "this app's key {me} is recipient {} of {}, enrolled at entry {}",
            mine.name, state.household, mine.index
        ),
    );
    // The enrollment of this app's own key is a change made with it.
    state.accepted.insert(mine.index);
    let by_index: BTreeMap<u64, RegistryEvent> = feed
        .registry
        .iter()
        .filter_map(|e| {
            let (i, leaf) = included(e, cp).ok()?;
            match LogEntry::from_cbor(&leaf).ok()?.decode_body().ok()? {
                DecodedBody::Registry(ev) => Some((i, ev)),
                _ => None,
            }
        })
        .collect();
    for i in events {
        if !state.accepted.contains(&i) {
            out.unaccepted.push(i);
            out.warnings.push(match by_index.get(&i) {
                Some(ev) => describe(i, ev),
                None => format!("entry {i}"),
            });
        }
    }
    if out.warnings.is_empty() {
        page.pass(
            "household.history",
            format!(
                "the household's {} registry events are all ones this app accepted",
                view.state().chain(&household).map_or(0, |c| c.count)
            ),
        );
    } else {
        page.pass(
            "household.history",
            format!(
                "WARNING: the household's registry changed without this app: {}",
                out.warnings.join("; ")
            ),
        );
    }
}

fn verify_message(
    m: &crate::bundle::ProvedEntry,
    cp: &Checkpoint,
    view: &RegistryView,
    trust: &Trust,
    secret: &RecipientSecret,
    state: &mut HomeState,
) -> MessageCheck {
    let mut report = Report::new("message");
    let (idx, leaf) = match included(m, cp) {
        Ok(x) => x,
        Err(e) => {
            report.fail("private.inclusion", e);
            return MessageCheck {
                index: None,
                report,
                reading: None,
            };
        }
    };
    report.subject = format!("message at entry {idx}");
    report.pass(
        "private.inclusion",
        format!("entry {idx} is in the checkpoint of size {}", cp.size),
    );
    let done = |report: &Report, reading| MessageCheck {
        index: Some(idx),
        report: report.clone(),
        reading,
    };
    let (logged_at, env) = match LogEntry::from_cbor(&leaf).and_then(|e| {
        let at = e.logged_at_ms;
        e.decode_body().map(|b| (at, b))
    }) {
        Ok((at, DecodedBody::Private(env))) => (at, env),
        Ok(_) => {
            report.fail(
                "private.decode",
                format!("entry {idx} is not a private message"),
            );
            return done(&report, None);
        }
        Err(e) => {
            report.fail("private.decode", format!("entry {idx}: {e}"));
            return done(&report, None);
        }
    };
    if env.household != state.household {
        report.fail(
            "private.decode",
            format!(
                "entry {idx} is for household {}, not {}",
                env.household, state.household
            ),
        );
        return done(&report, None);
    }
    report.pass(
        "private.decode",
        format!(
            "household {}, message {} of gateway key {}, received at {}, logged at {logged_at}, {} recipients",
            env.household,
            env.msg_seq,
            env.kid,
            env.received_at_ms,
            env.content.recipients.len()
        ),
    );
    // Replays: the log index and the gateway's message number both go forward.
    if let Some(last) = state.last_index.filter(|l| idx <= *l) {
        report.fail(
            "private.replay",
            format!(
                "replayed: entry {idx} is not after entry {last}, the last message this app showed"
            ),
        );
        return done(&report, None);
    }
    // What the cloud checked, checked again at the message's position.
    let claims = PrivateClaims::of(&env);
    let verdict = match view.state().check_private(idx, logged_at, &claims) {
        Ok(v) => v,
        Err((r, d)) => {
            report.fail(r.step(), format!("{}: {d}", r.code()));
            return done(&report, None);
        }
    };
    if let Some(last) = state
        .gateway_seq
        .get(&verdict.gateway_id)
        .filter(|l| env.msg_seq <= **l)
    {
        report.fail(
            "private.replay",
            format!(
                "replayed: gateway {}'s message number {} is not above {last}, which this app already showed",
                verdict.gateway_id, env.msg_seq
            ),
        );
        return done(&report, None);
    }
    report.pass(
        "registry.household",
        format!(
            "{} encrypts for {} at {}",
            verdict.gateway_id, env.household, env.received_at_ms
        ),
    );
    // Every recipient is one this app accepted: a key enrolled behind the owner's back reads it.
    let mut strangers = Vec::new();
    for kid in env.content.recipient_kids() {
        if let Some(r) = view.state().recipient(&kid) {
            if !state.accepted.contains(&r.index) {
                strangers.push(format!(
                    "key {kid} (recipient {}, enrolled at entry {})",
                    r.name, r.index
                ));
            }
        }
    }
    if strangers.is_empty() {
        report.pass(
            "private.recipients",
            format!(
                "encrypted only to accepted recipients: {}",
                verdict.recipients.join(", ")
            ),
        );
    } else {
        report.fail(
            "private.recipients",
            format!(
                "also encrypted to {}, which this app has not accepted: whoever holds it can read this message",
                strangers.join(", ")
            ),
        );
        return done(&report, None);
    }
    if let Err(e) = env.verify_gateway(&verdict.gateway_key) {
        report.fail("gateway.signature", e.to_string());
        return done(&report, None);
    }
    report.pass(
        "gateway.signature",
        "the gateway's signature over the ciphertext is valid",
    );
    let (_, sr) = match env.open(secret) {
        Ok(x) => x,
        Err(PrivateError::NotForMe(k)) => {
            report.fail(
                "private.for_me",
                format!(
                    "not encrypted to this app's current key {k}: it was sent to other keys only"
                ),
            );
            return done(&report, None);
        }
        Err(e) => {
            report.fail("private.decrypt", e.to_string());
            return done(&report, None);
        }
    };
    report.pass(
        "private.decrypt",
        "decrypted with this app's key; the sensor's signed reading inside",
    );
    let r = &sr.reading;
    let rc = ReadingClaims {
        gateway_kid: env.kid,
        sensor_kid: sr.kid,
        sensor_id: &r.sensor_id,
        seq: r.seq,
        measured_at_ms: r.measured_at_ms,
        received_at_ms: env.received_at_ms,
    };
    let facts = view.check_claims(idx, logged_at, &rc, trust);
    for (step, outcome) in facts.checks {
        report.check(step, outcome);
    }
    report.check(
        "registry.not_revoked",
        view.check_not_revoked(&KeyUse::of_claims(idx, logged_at, &rc)),
    );
    report.check(
        "sensor.signature",
        match facts.sensor_key {
            None => Err("cannot check: the sensor key is not in the evidence".into()),
            Some(k) => sr
                .verify(&k)
                .map(|()| "the sensor's COSE_Sign1 signature is valid".into())
                .map_err(|e| e.to_string()),
        },
    );
    if let Some(last) = state.sensor_seq.get(&r.sensor_id).filter(|l| r.seq <= **l) {
        report.fail(
            "reading.replay",
            format!(
                "replayed: sensor {}'s sequence number {} is not above {last}, which this app already showed",
                r.sensor_id, r.seq
            ),
        );
    }
    if !report.verified {
        return done(&report, None);
    }
    state.last_index = Some(idx);
    state
        .gateway_seq
        .insert(verdict.gateway_id.clone(), env.msg_seq);
    state.sensor_seq.insert(r.sensor_id.clone(), r.seq);
    let reading = HomeReading {
        index: idx,
        logged_at_ms: logged_at,
        received_at_ms: env.received_at_ms,
        gateway_id: verdict.gateway_id,
        sensor_id: r.sensor_id.clone(),
        seq: r.seq,
        measured_at_ms: r.measured_at_ms,
        measurements: r
            .measurements
            .iter()
            .map(|m| {
                (
                    m.vital.loinc.to_string(),
                    m.value.to_string(),
                    m.vital.unit.to_string(),
                )
            })
            .collect(),
    };
    done(&report, Some(reading))
}

/// The KeyId of a recipient secret (for state files and messages).
pub fn key_id_of(secret: &RecipientSecret) -> KeyId {
    secret.public().key_id()
}
