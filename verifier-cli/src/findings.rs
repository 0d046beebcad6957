//! What the monitor reports: [`Finding`]s, which registry changes concern the watched devices
//! and issuers ([`Watch`]), and the actions per finding (a command, a Standard Webhook).

use provenance_core::cert::DeviceCert;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{RegistryState, Subject};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A registry change, reported.
    Info,
    /// Worth a look (a watched key revoked, a stale checkpoint).
    Warning,
    /// The log misbehaved or a watched key changed unexpectedly: exit status 1.
    Alert,
}

/// One thing the monitor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `issuer_enrolled`, `device_enrolled`, `binding`, `assignment`, `rotation`,
    /// `unexpected_key_change`, `revocation`, `registry_rule_broken`, `fork`, `inconsistent`,
    /// `registry_incomplete`, `stale_checkpoint`, `bad_checkpoint`.
    pub kind: String,
    /// How serious.
    pub severity: Severity,
    /// The log's origin.
    pub origin: String,
    /// The log index of the entry, for registry changes.
    pub index: Option<u64>,
    /// The device id, issuer or tree size it is about.
    pub subject: String,
    /// What happened.
    pub detail: String,
    /// The checkpoint it was found against (signed note), for forks and checkpoint problems the
    /// evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The kept checkpoint it contradicts, for forks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_checkpoint: Option<String>,
}

impl Finding {
    /// A stable id (the same finding twice has the same id, so receivers can de-duplicate).
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.kind.as_str(),
            self.origin.as_str(),
            &self.index.map(|i| i.to_string()).unwrap_or_default(),
            self.subject.as_str(),
            self.detail.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("mon_{}", crate::trust::hex(&h.finalize()[..12]))
    }

    /// One line for humans.
    pub fn human(&self) -> String {
        let sev = match self.severity {
            Severity::Info => "info ",
            Severity::Warning => "WARN ",
            Severity::Alert => "ALERT",
        };
        let at = self.index.map(|i| format!(" @{i}")).unwrap_or_default();
        format!(
            "[{sev}] {}{at} {}: {}",
            self.kind, self.subject, self.detail
        )
    }
}

/// Which devices and issuers to report (all when both lists are empty), and the announced key
/// changes.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Device ids.
    pub devices: Vec<String>,
    /// Issuers, by certificate CN or key id (hex).
    pub issuers: Vec<String>,
    /// Announced key changes: (device id, new key id hex).
    pub expect_keys: Vec<(String, String)>,
}

impl Watch {
    pub(crate) fn watching(&self) -> bool {
        !self.devices.is_empty() || !self.issuers.is_empty()
    }

    fn watched_device(&self, id: &str) -> bool {
        !self.watching() || self.devices.iter().any(|d| d == id)
    }

    fn watched_issuer(&self, cn: &str, kid: &str) -> bool {
        !self.watching() || self.issuers.iter().any(|i| i == cn || i == kid)
    }

    /// The finding of one applied registry event, if it concerns what is watched.
    pub(crate) fn describe(
        &self,
        index: u64,
        event: &RegistryEvent,
        subject: Option<&Subject>,
        origin: &str,
        registry: &RegistryState,
    ) -> Option<Finding> {
        let cert = |der: &[u8]| DeviceCert::from_der(der).ok();
        let (kind, severity, who, detail) = match event {
            RegistryEvent::EnrollIssuer { cert: der, role } => {
                let c = cert(der)?;
                let kid = c.key_id.to_hex();
                if !self.watched_issuer(&c.subject_cn, &kid) {
                    return None;
                }
                (
                    "issuer_enrolled",
                    Severity::Info,
                    c.subject_cn,
                    format!("issuer of {} certificates, key {kid}", role.as_str()),
                )
            }
            RegistryEvent::EnrollSensor { cert: der }
            | RegistryEvent::EnrollGateway { cert: der } => {
                let c = cert(der)?;
                if !self.watched_device(&c.subject_cn) {
                    return None;
                }
                (
                    "device_enrolled",
                    Severity::Info,
                    c.subject_cn,
                    format!("{:?} enrolled with key {}", c.role, c.key_id.to_hex()),
                )
            }
            RegistryEvent::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                if !self.watched_device(sensor_id) && !self.watched_device(gateway_id) {
                    return None;
                }
                (
                    "binding",
                    Severity::Info,
                    sensor_id.clone(),
                    format!(
                        "bound to gateway {gateway_id} from {from_ms}{}",
                        until_ms.map(|u| format!(" until {u}")).unwrap_or_default()
                    ),
                )
            }
            RegistryEvent::AssignPatient {
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                if !self.watched_device(sensor_id) {
                    return None;
                }
                (
                    "assignment",
                    Severity::Info,
                    sensor_id.clone(),
                    format!("assigned to patient {pseudonym} from {from_ms}"),
                )
            }
            RegistryEvent::RotateKey {
                device_id,
                cert: der,
                from_ms,
            } => {
                let watched = self.devices.iter().any(|d| d == device_id);
                if !self.watched_device(device_id) {
                    return None;
                }
                let kid = cert(der).map(|c| c.key_id.to_hex()).unwrap_or_default();
                let expected = self
                    .expect_keys
                    .iter()
                    .any(|(d, k)| d == device_id && k.eq_ignore_ascii_case(&kid));
                if watched && !expected {
                    (
                        "unexpected_key_change",
                        Severity::Alert,
                        device_id.clone(),
                        format!("the watched device's key changed to {kid} from {from_ms}, not announced with --expect-key"),
                    )
                } else {
                    (
                        "rotation",
                        Severity::Info,
                        device_id.clone(),
                        format!("new key {kid} from {from_ms}"),
                    )
                }
            }
            RegistryEvent::Revoke {
                key_id,
                from_ms,
                reason,
            } => {
                let kid = key_id.to_hex();
                let (name, watched) = match subject {
                    Some(Subject::Device(id)) | Some(Subject::Household(id)) => {
                        (id.clone(), self.watched_device(id))
                    }
                    Some(Subject::Issuer(k)) => {
                        let cn = registry
                            .issuer(k)
                            .map_or_else(|| k.to_hex(), |i| i.cert.subject_cn.clone());
                        let w = self.watched_issuer(&cn, &k.to_hex());
                        (cn, w)
                    }
                    None => (kid.clone(), !self.watching()),
                };
                if !watched {
                    return None;
                }
                let severity = if self.watching() {
                    Severity::Warning
                } else {
                    Severity::Info
                };
                (
                    "revocation",
                    severity,
                    name,
                    format!("key {kid} revoked from {from_ms}: {reason}"),
                )
            }
            // Private mode: a household is watched like a device (by its id). A new recipient
            // key can read every message sent to the household from its start: on a watched
            // household that is worth a person's look.
            RegistryEvent::EnrollRecipient {
                household,
                name,
                key,
                from_ms,
            } => {
                if !self.watched_device(household) {
                    return None;
                }
                (
                    "recipient_enrolled",
                    if self.watching() {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    household.clone(),
                    format!(
                        "recipient {name} reads with key {} from {from_ms}",
                        key.key_id().to_hex()
                    ),
                )
            }
            RegistryEvent::BindHousehold {
                gateway_id,
                household,
                from_ms,
            } => {
                if !self.watched_device(household) && !self.watched_device(gateway_id) {
                    return None;
                }
                (
                    "household_binding",
                    Severity::Info,
                    household.clone(),
                    format!("gateway {gateway_id} encrypts for it from {from_ms}"),
                )
            }
        };
        Some(Finding {
            kind: kind.into(),
            severity,
            origin: origin.into(),
            index: Some(index),
            subject: who,
            detail,
            checkpoint: None,
            kept_checkpoint: None,
        })
    }
}

/// Runs `command` (with `sh -c`) with the finding's JSON on stdin and a minimal environment.
pub fn run_command(command: &str, finding: &Finding) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let json = serde_json::to_string(finding).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).env_clear().stdin(Stdio::piped());
    for var in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes());
    }
    let status = child
        .wait()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} exited with {status}"))
    }
}

/// Posts the finding as a Standard Webhook (`monitor.finding`), signed with `secret`.
pub fn post_webhook(
    url: &str,
    secret: &str,
    finding: &Finding,
    now_secs: u64,
) -> Result<(), String> {
    let body = serde_json::json!({
        "type": "monitor.finding",
        "timestamp": now_secs,
        "data": finding,
    })
    .to_string();
    let id = finding.id();
    let signature = provenance_core::webhook::sign(secret, &id, now_secs, &body)
        .ok_or("the webhook secret is not a whsec_ secret")?;
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .redirects(0)
        .build()
        .post(url)
        .set("content-type", "application/json")
        .set("webhook-id", &id)
        .set("webhook-timestamp", &now_secs.to_string())
        .set("webhook-signature", &signature)
        .send_string(&body)
        .map(drop)
        .map_err(|e| format!("POST {url}: {e}"))
}
