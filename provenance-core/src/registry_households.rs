//! Private mode in the registry: households, the recipients who read their messages, and the
//! gateways that encrypt for them.
//!
//! - `enroll-recipient`: a key never enrolled before (by anyone, in any role) and a usable
//!   X25519 key; a name already enrolled in the household rotates: its current key is retired
//!   from the new key's `from` (which may not be before the current key's).
//! - `bind-household`: an enrolled gateway; from `from` on it encrypts for that household (its
//!   latest binding in force is the one that counts, so a gateway serves one household at a time).
//! - `revoke` of a recipient key: it reads nothing sent from its `from` on.
//!
//! A private message at position `p` is held to the events before `p`: the gateway's key as for
//! a reading (at logged-at), the gateway's household and every recipient key at received-at.

use super::{revoked_by, EventRefusal, Refusal, RegistryState, Revocation, Say};
use super::{MAX_BACKLOG_MS, MAX_CLOCK_SKEW_MS};
use crate::cert::Role;
use crate::keys::KeyId;
use crate::private::{PrivateEnvelope, RecipientKey};
use alloc::{string::String, vec::Vec};
use ed25519_dalek::VerifyingKey;

/// A recipient key of a household.
#[derive(Debug, Clone)]
pub struct RecipientEntry {
    /// The household.
    pub household: String,
    /// The recipient's name in it.
    pub name: String,
    /// The X25519 public key.
    pub key: RecipientKey,
    /// Log index of its enrollment.
    pub index: u64,
    /// In force from, Unix ms.
    pub from_ms: u64,
    /// Retired by a newer key of the same name: (log index, end (exclusive), Unix ms).
    pub retired: Option<(u64, u64)>,
    /// Its revocations, in log order.
    pub revocations: Vec<Revocation>,
}

/// A gateway's binding to a household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdBinding {
    /// Log index.
    pub index: u64,
    /// The gateway.
    pub gateway_id: String,
    /// From, Unix ms.
    pub from_ms: u64,
}

/// A household (private mode).
#[derive(Debug, Clone, Default)]
pub struct Household {
    /// Its recipient keys, in enrollment order.
    pub recipients: Vec<KeyId>,
    /// Its gateway bindings, in log order.
    pub gateways: Vec<HouseholdBinding>,
    /// Log indices of every event about it.
    pub events: Vec<u64>,
}

/// What a private envelope exposes: all the state machine needs of it.
#[derive(Debug, Clone)]
pub struct PrivateClaims<'a> {
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// The household.
    pub household: &'a str,
    /// When the gateway received the frame, Unix ms.
    pub received_at_ms: u64,
    /// The keys it is encrypted to.
    pub recipients: Vec<KeyId>,
}

impl<'a> PrivateClaims<'a> {
    /// The claims of a decoded private envelope.
    pub fn of(env: &'a PrivateEnvelope) -> Self {
        Self {
            gateway_kid: env.kid,
            household: &env.household,
            received_at_ms: env.received_at_ms,
            recipients: env.content.recipient_kids(),
        }
    }
}

/// What a private message that passed every check is.
#[derive(Debug, Clone)]
pub struct PrivateVerdict {
    /// The gateway's key, to verify its signature with.
    pub gateway_key: VerifyingKey,
    /// The gateway id.
    pub gateway_id: String,
    /// The recipients' names, in message order.
    pub recipients: Vec<String>,
}

impl RegistryState {
    /// A household by its id.
    pub fn household(&self, id: &str) -> Option<&Household> {
        self.households.get(id)
    }

    /// Every household.
    pub fn households(&self) -> impl Iterator<Item = (&String, &Household)> {
        self.households.iter()
    }

    /// A recipient key by its KeyId.
    pub fn recipient(&self, kid: &KeyId) -> Option<&RecipientEntry> {
        self.recipient_keys.get(kid)
    }

    /// Whether a recipient key is in force at `at` by the events before `position`.
    fn recipient_current(r: &RecipientEntry, position: u64, at: u64) -> bool {
        r.index < position
            && r.from_ms <= at
            && r.retired
                .filter(|(i, _)| *i < position)
                .is_none_or(|(_, end)| at < end)
            && revoked_by(&r.revocations, position, at).is_none()
    }

    /// The household's recipient keys in force at `at` by the events before `position`, in
    /// enrollment order: the keys a gateway encrypts to.
    pub fn current_recipients(
        &self,
        household: &str,
        position: u64,
        at: u64,
    ) -> Vec<&RecipientEntry> {
        self.households
            .get(household)
            .map(|h| {
                h.recipients
                    .iter()
                    .filter_map(|k| self.recipient_keys.get(k))
                    .filter(|r| Self::recipient_current(r, position, at))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The household the gateway encrypts for at `at`, by the events before `position`.
    pub fn household_of(&self, gateway_id: &str, position: u64, at: u64) -> Option<&str> {
        self.households
            .iter()
            .flat_map(|(id, h)| h.gateways.iter().map(move |b| (id, b)))
            .filter(|(_, b)| b.gateway_id == gateway_id && b.index < position && b.from_ms <= at)
            .max_by_key(|(_, b)| b.index)
            .map(|(id, _)| id.as_str())
    }

    pub(super) fn enroll_recipient(
        &mut self,
        index: u64,
        household: &str,
        name: &str,
        key: &RecipientKey,
        from_ms: u64,
    ) -> Result<(), EventRefusal> {
        let kid = key.key_id();
        if self.known_key(&kid) {
            return Err(EventRefusal::KeyAlreadyEnrolled(kid));
        }
        let h = self.households.entry(household.into()).or_default();
        let current = h.recipients.iter().copied().rfind(|k| {
            self.recipient_keys
                .get(k)
                .is_some_and(|r| r.name == name && r.retired.is_none())
        });
        if let Some(cur) = current.and_then(|k| self.recipient_keys.get(&k)) {
            if from_ms < cur.from_ms {
                return Err(EventRefusal::RecipientBackwards(name.into(), cur.from_ms));
            }
        }
        if let Some(cur) = current.and_then(|k| self.recipient_keys.get_mut(&k)) {
            cur.retired = Some((index, from_ms));
        }
        h.recipients.push(kid);
        h.events.push(index);
        self.recipient_keys.insert(
            kid,
            RecipientEntry {
                household: household.into(),
                name: name.into(),
                key: *key,
                index,
                from_ms,
                retired: None,
                revocations: Vec::new(),
            },
        );
        Ok(())
    }

    pub(super) fn bind_household(
        &mut self,
        index: u64,
        gateway_id: &str,
        household: &str,
        from_ms: u64,
    ) {
        let h = self.households.entry(household.into()).or_default();
        h.gateways.push(HouseholdBinding {
            index,
            gateway_id: gateway_id.into(),
            from_ms,
        });
        h.events.push(index);
    }

    pub(super) fn revoke_recipient(&mut self, index: u64, kid: &KeyId, rev: Revocation) {
        if let Some(r) = self.recipient_keys.get_mut(kid) {
            r.revocations.push(rev);
            if let Some(h) = self.households.get_mut(&r.household) {
                h.events.push(index);
            }
        }
    }

    /// Judges a private message logged at `position` and `logged_at_ms` by the events before
    /// `position`: received-at plausible, the gateway's key enrolled, current, valid and not
    /// revoked at logged-at, the gateway bound to the household at received-at, and every
    /// recipient a current recipient of the household at received-at. The first failure, with
    /// a detail.
    pub fn check_private(
        &self,
        position: u64,
        logged_at_ms: u64,
        c: &PrivateClaims<'_>,
    ) -> Result<PrivateVerdict, (Refusal, String)> {
        let (received, logged) = (c.received_at_ms, logged_at_ms);
        if received > logged.saturating_add(MAX_CLOCK_SKEW_MS)
            || received.saturating_add(MAX_BACKLOG_MS) < logged
        {
            return Err((
                Refusal::ImplausibleTime,
                alloc::format!("received at {received}, logged at {logged}: outside 30 days before to 5 minutes after"),
            ));
        }
        let gw = self
            .key_before(&c.gateway_kid, Role::Gateway, position)
            .ok_or_else(|| {
                (
                    Refusal::UnknownGatewayKey,
                    alloc::format!(
                        "gateway key {} is not enrolled before entry {position}",
                        c.gateway_kid
                    ),
                )
            })?;
        self.key_valid(gw, position, logged, Say(true))
            .map_err(|e| (Refusal::GatewayKeyNotValid, e))?;
        if let Some((what, r)) = self.revocation(gw, position, logged) {
            return Err((
                Refusal::GatewayKeyRevoked,
                alloc::format!(
                    "the gateway's {what} was revoked from {} (entry {})",
                    r.from_ms,
                    r.index
                ),
            ));
        }
        let gateway_id = gw.cert.subject_cn.clone();
        let bound = self.household_of(&gateway_id, position, received);
        if bound != Some(c.household) {
            return Err((
                Refusal::NotBoundToHousehold,
                match bound {
                    Some(h) => alloc::format!(
                        "{gateway_id} encrypts for {h}, not {}, at {received}",
                        c.household
                    ),
                    None => alloc::format!("{gateway_id} is bound to no household at {received}"),
                },
            ));
        }
        if c.recipients.is_empty() {
            return Err((Refusal::RecipientNotCurrent, "no recipients".into()));
        }
        let mut names = Vec::with_capacity(c.recipients.len());
        for kid in &c.recipients {
            let r = self
                .recipient_keys
                .get(kid)
                .filter(|r| r.household == c.household && r.index < position);
            match r {
                Some(r) if Self::recipient_current(r, position, received) => {
                    names.push(r.name.clone())
                }
                Some(r) => {
                    return Err((
                        Refusal::RecipientNotCurrent,
                        alloc::format!(
                            "recipient key {kid} ({}) is retired, revoked or not yet in force at {received}",
                            r.name
                        ),
                    ))
                }
                None => {
                    return Err((
                        Refusal::RecipientNotCurrent,
                        if position == u64::MAX {
                            alloc::format!("key {kid} is not a recipient of {}", c.household)
                        } else {
                            alloc::format!(
                                "key {kid} is not a recipient of {} enrolled before entry {position}",
                                c.household
                            )
                        },
                    ))
                }
            }
        }
        Ok(PrivateVerdict {
            gateway_key: gw.cert.public_key,
            gateway_id,
            recipients: names,
        })
    }
}

impl RegistryState {
    /// The subjects whose complete histories decide a household's messages: the household,
    /// every gateway ever bound to it, every sensor ever bound to those gateways and the other
    /// gateways those sensors were bound to, and the issuers of all their keys. (The cloud does
    /// not know which sensor a message is from; the owner's app finds out when it decrypts,
    /// and needs that sensor's history.)
    pub fn subjects_for_household(&self, household: &str) -> Vec<super::Subject> {
        use super::Subject;
        let gateways: Vec<&str> = self
            .households
            .get(household)
            .map(|h| h.gateways.iter().map(|b| b.gateway_id.as_str()).collect())
            .unwrap_or_default();
        let mut devices: Vec<&str> = gateways.clone();
        for (id, d) in &self.devices {
            if d.bindings
                .iter()
                .any(|b| gateways.contains(&b.gateway_id.as_str()))
            {
                devices.push(id);
                devices.extend(d.bindings.iter().map(|b| b.gateway_id.as_str()));
            }
        }
        let mut out = alloc::vec![Subject::Household(household.into())];
        for id in devices {
            out.push(Subject::Device(id.into()));
            for k in self.device_keys(id) {
                out.push(Subject::Issuer(k.issuer));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
