//! Frame checks at the gateway, and local alarms and spooling with the cloud unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::SigningKey;
use gateway_uplink::frames::{self, FrameReject, GatewayRegistry, SyncedEvent, SyncedEvents};
use gateway_uplink::{Config, Gateway};
use provenance_core::cert::{self, CertParams, DeviceCert, Role};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::reading::{Decimal, Measurement, Reading};
use provenance_core::registry::{IssuerRole, RegistryEvent};
use provenance_core::registry_state::Refusal;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The tests' "now": the real clock (the gateway stamps frames with it).
static NOW: LazyLock<u64> = LazyLock::new(gateway_uplink::now_ms);
const H: u64 = 3_600_000;

struct Devices {
    mfr: DeviceCert,
    fleet: DeviceCert,
    gateway: DeviceCert,
    k1: SigningKey,
    c1: DeviceCert,
    k2: SigningKey,
    c2: DeviceCert,
}

fn devices() -> Devices {
    let now = *NOW;
    let p = |cn: &'static str, serial| CertParams {
        common_name: cn,
        organization: "Acme",
        serial,
        not_before_ms: now - 86_400_000,
        not_after_ms: now + 86_400_000,
    };
    let mfr_key = SigningKey::from_bytes(&[1; 32]);
    let mfr = cert::issue_ca(&mfr_key, &p("Acme CA", 1)).unwrap();
    let fleet_key = SigningKey::from_bytes(&[9; 32]);
    let fleet = cert::issue_ca(&fleet_key, &p("Acme Fleet CA", 4)).unwrap();
    let gateway = cert::issue_device(
        &fleet_key,
        &fleet,
        Role::Gateway,
        &SigningKey::from_bytes(&[7; 32]).verifying_key(),
        &p("GW-0001", 5),
    )
    .unwrap();
    let (k1, k2) = (
        SigningKey::from_bytes(&[2; 32]),
        SigningKey::from_bytes(&[3; 32]),
    );
    let c1 = cert::issue_device(
        &mfr_key,
        &mfr,
        Role::Sensor,
        &k1.verifying_key(),
        &p("SN-0001", 2),
    )
    .unwrap();
    let c2 = cert::issue_device(
        &mfr_key,
        &mfr,
        Role::Sensor,
        &k2.verifying_key(),
        &p("SN-0002", 3),
    )
    .unwrap();
    Devices {
        mfr,
        fleet,
        gateway,
        k1,
        c1,
        k2,
        c2,
    }
}

/// The logged registry events a sync would bring: both issuers, GW-0001, SN-0001 bound to it
/// from an hour ago, SN-0002 enrolled but not bound, and `extra` events after them.
fn synced(d: &Devices, extra: Vec<RegistryEvent>) -> SyncedEvents {
    let now = *NOW;
    let mut events = vec![
        RegistryEvent::EnrollIssuer {
            cert: d.mfr.der().to_vec(),
            role: IssuerRole::SensorManufacturer,
        },
        RegistryEvent::EnrollIssuer {
            cert: d.fleet.der().to_vec(),
            role: IssuerRole::GatewayFleet,
        },
        RegistryEvent::EnrollGateway {
            cert: d.gateway.der().to_vec(),
        },
        RegistryEvent::EnrollSensor {
            cert: d.c1.der().to_vec(),
        },
        RegistryEvent::EnrollSensor {
            cert: d.c2.der().to_vec(),
        },
        RegistryEvent::Bind {
            sensor_id: "SN-0001".into(),
            gateway_id: "GW-0001".into(),
            from_ms: now - H,
            until_ms: None,
        },
    ];
    events.extend(extra);
    SyncedEvents {
        gateway_id: "GW-0001".into(),
        events: events
            .into_iter()
            .enumerate()
            .map(|(i, e)| SyncedEvent {
                index: i as u64,
                leaf_data: B64.encode(
                    LogEntry {
                        kind: EntryKind::Registry,
                        body: e.to_cbor().unwrap(),
                        logged_at_ms: now - 2 * H + i as u64,
                    }
                    .to_cbor(),
                ),
            })
            .collect(),
    }
}

fn registry(d: &Devices, extra: Vec<RegistryEvent>) -> GatewayRegistry {
    GatewayRegistry::from_events("GW-0001", &synced(d, extra)).unwrap()
}

fn frame(key: &SigningKey, id: &str, seq: u64, at: u64, hr: i64) -> Vec<u8> {
    let r = Reading {
        sensor_id: id.into(),
        seq,
        measured_at_ms: at,
        measurements: vec![Measurement::new("8867-4", Decimal::new(hr, 0)).unwrap()],
    };
    SignedReading::sign(&r, key).unwrap()
}

fn refusal(r: Result<SignedReading, FrameReject>) -> Option<Refusal> {
    r.err().and_then(|e| e.refusal())
}

#[test]
fn rejections() {
    let d = devices();
    let now = *NOW;
    let (k1, k2) = (&d.k1, &d.k2);
    let b = registry(&d, vec![]);
    let mut last = HashMap::new();
    let good = frame(k1, "SN-0001", 5, now, 70);
    assert_eq!(
        frames::check(&good, &b, now, &mut last)
            .unwrap()
            .reading
            .seq,
        5
    );
    // Replayed (the same frame again) and older sequence numbers.
    assert!(matches!(
        frames::check(&good, &b, now, &mut last),
        Err(FrameReject::Replay {
            seq: 5,
            last: 5,
            ..
        })
    ));
    assert!(matches!(
        frames::check(&frame(k1, "SN-0001", 4, now, 70), &b, now, &mut last),
        Err(FrameReject::Replay { .. })
    ));
    // Corrupted in transit: every single-byte corruption is caught, one way or another.
    for i in (0..good.len()).step_by(3) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        let mut fresh = HashMap::new();
        assert!(
            frames::check(&bad, &b, now, &mut fresh).is_err(),
            "byte {i}"
        );
    }
    assert!(matches!(
        frames::check(b"garbage", &b, now, &mut last),
        Err(FrameReject::Corrupt(_))
    ));
    // A sensor not bound to this gateway.
    assert_eq!(
        refusal(frames::check(
            &frame(k2, "SN-0002", 1, now, 70),
            &b,
            now,
            &mut last
        )),
        Some(Refusal::NotBound)
    );
    // A bound key claiming another sensor's id.
    assert_eq!(
        refusal(frames::check(
            &frame(k1, "SN-0002", 9, now, 70),
            &b,
            now,
            &mut last
        )),
        Some(Refusal::SensorIdMismatch)
    );
    // Received before the binding started (the gateway's clock decides, not measured-at).
    assert_eq!(
        refusal(frames::check(
            &frame(k1, "SN-0001", 10, now - 2 * H, 70),
            &b,
            now - 2 * H,
            &mut last
        )),
        Some(Refusal::NotBound)
    );
    assert_eq!(
        refusal(frames::check(
            &frame(k1, "SN-0001", 11, now - 2 * H, 70),
            &b,
            now,
            &mut last
        )),
        None,
        "a backdated measured-at does not matter to the binding"
    );
    // A measured-at far in the future.
    assert_eq!(
        refusal(frames::check(
            &frame(k1, "SN-0001", 12, now + H, 70),
            &b,
            now,
            &mut last
        )),
        Some(Refusal::ImplausibleTime)
    );
    // Nothing synced yet: every frame is refused.
    let empty = GatewayRegistry::empty("GW-0001");
    assert_eq!(
        refusal(frames::check(
            &frame(k1, "SN-0001", 13, now, 70),
            &empty,
            now,
            &mut last
        )),
        Some(Refusal::UnknownSensorKey)
    );
}

/// The gateway syncs revocations: a revoked sensor key (or a revoked issuer) is refused from
/// the revocation on, judged at the gateway's own clock however the frame backdates itself.
#[test]
fn revoked_keys_and_issuers_are_refused() {
    let d = devices();
    let now = *NOW;
    let revoke = |kid| RegistryEvent::Revoke {
        key_id: kid,
        from_ms: now - 600_000,
        reason: "stolen".into(),
    };
    for (what, reg) in [
        ("sensor key", registry(&d, vec![revoke(d.c1.key_id)])),
        ("issuer", registry(&d, vec![revoke(d.mfr.key_id)])),
    ] {
        let mut last = HashMap::new();
        let backdated = frame(&d.k1, "SN-0001", 1, now - 1_200_000, 70);
        assert_eq!(
            refusal(frames::check(&backdated, &reg, now, &mut last)),
            Some(Refusal::SensorKeyRevoked),
            "{what}"
        );
        assert!(
            frames::check(&backdated, &reg, now - 900_000, &mut last).is_ok(),
            "{what}: received before the revocation"
        );
    }
    // A sync whose events break the registry rules is refused whole.
    let mut bad = synced(&d, vec![]);
    bad.events.swap(0, 3);
    assert!(GatewayRegistry::from_events("GW-0001", &bad).is_err());
    assert!(GatewayRegistry::from_events("GW-0002", &synced(&d, vec![])).is_err());
}

/// A fresh gateway folder with a key and the registry events of `d` cached (as if synced),
/// and its settings.
fn setup(name: &str, d: &Devices) -> (std::path::PathBuf, Config) {
    let dir = std::env::temp_dir().join(format!("gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("gw.key");
    std::fs::write(&key_file, hex::encode([7u8; 32])).unwrap();
    std::fs::write(
        dir.join(gateway_uplink::REGISTRY_CACHE),
        serde_json::to_vec(&synced(d, vec![])).unwrap(),
    )
    .unwrap();
    let cfg = config(&dir, &key_file);
    (dir, cfg)
}

fn config(dir: &std::path::Path, key_file: &std::path::Path) -> Config {
    let mut cfg = Config::with_defaults(
        "GW-0001",
        key_file,
        "http://127.0.0.1:9", // nothing listens: the cloud is down
        "vlt_test",
        dir,
    );
    cfg.spool_max = 4;
    cfg.backoff_ms = 10;
    cfg.backoff_max_ms = 100;
    cfg
}

/// With the cloud down: alarms still fire, readings are spooled (durably, in order), a full
/// spool drops loudly, and everything is still there after a restart.
#[test]
fn alarms_and_spooling_with_the_cloud_down() {
    let d = devices();
    let (k1, c1) = (&d.k1, &d.c1);
    let (dir, mut cfg) = setup("test", &d);
    let paged = dir.join("paged.jsonl");
    cfg.alarm_command = Some(format!("cat >> {}", paged.display()));
    cfg.alarm_command_interval_ms = 0; // every alarm pages (the rate limit has its own test)
    let gw = Gateway::open(cfg.clone()).unwrap();
    let now = *NOW;
    gw.receive(&[
        frame(k1, "SN-0001", 1, now, 72),
        frame(k1, "SN-0001", 2, now + 1, 150),
        frame(k1, "SN-0001", 3, now + 2, 35),
    ]);
    assert_eq!(
        gw.stats.alarms.get(),
        2,
        "tachycardia and bradycardia alarmed locally"
    );
    assert_eq!(gw.stats.frames("accepted"), 3);
    // Each alarm is a JSON line in the alarm file, and went to the alarm command.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("alarms.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["gateway_id"], "GW-0001");
    assert_eq!(lines[0]["alarm"]["sensor_id"], "SN-0001");
    assert_eq!(lines[0]["alarm"]["seq"], 2);
    assert_eq!(lines[0]["alarm"]["loinc"], "8867-4");
    assert_eq!(lines[0]["alarm"]["value"], 150.0);
    assert_eq!(lines[0]["alarm"]["high"], 131.0);
    assert_eq!(lines[1]["alarm"]["value"], 35.0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&paged).map_or(0, |s| s.lines().count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm command ran for both alarms"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gw.receive(&[
        frame(k1, "SN-0001", 4, now + 3, 70),
        frame(k1, "SN-0001", 5, now + 4, 70),
    ]);
    assert_eq!(
        gw.stats.dropped.get(),
        2,
        "the spool holds 4: a burst that does not fit is dropped, loudly"
    );
    drop(gw);
    // A restart: the spool and the replay state come back.
    let gw = Gateway::open(cfg).unwrap();
    let spooled = gw.spool.lock().unwrap().peek(10).unwrap();
    assert_eq!(spooled.len(), 3);
    let seqs: Vec<u64> = spooled
        .iter()
        .map(|r| {
            GatewayEnvelope::decode(&r.bytes)
                .unwrap()
                .sensor
                .reading
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let env = GatewayEnvelope::decode(&spooled[0].bytes).unwrap();
    env.verify(
        &SigningKey::from_bytes(&[7u8; 32]).verifying_key(),
        &c1.public_key,
    )
    .unwrap();
    gw.receive(&[frame(k1, "SN-0001", 2, now + 5, 70)]);
    assert_eq!(
        gw.stats.frames("replay"),
        1,
        "replay protection survives the restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replay protection survives spool compaction: the high-water marks are saved before the spool
/// drops its records, so an old frame replayed to a restarted gateway is still refused.
#[test]
fn replay_protection_survives_compaction_and_restart() {
    let d = devices();
    let k1 = &d.k1;
    let (dir, mut cfg) = setup("compact", &d);
    cfg.spool_max = 100;
    cfg.spool_compact_bytes = 1;
    let old = frame(k1, "SN-0001", 3, *NOW + 3, 70);
    let gw = Gateway::open(cfg.clone()).unwrap();
    gw.receive(&[
        frame(k1, "SN-0001", 1, *NOW + 1, 70),
        frame(k1, "SN-0001", 2, *NOW + 2, 70),
        old.clone(),
    ]);
    // The service acknowledged everything: the spool compacts.
    let end = gw.spool.lock().unwrap().peek(10).unwrap()[2].end;
    gw.ack(end).unwrap();
    assert!(gw.spool.lock().unwrap().is_empty(), "compacted");
    drop(gw);
    let gw = Gateway::open(cfg.clone()).unwrap();
    gw.receive(std::slice::from_ref(&old));
    assert_eq!(gw.stats.frames("replay"), 1, "refused after compaction");
    gw.receive(&[frame(k1, "SN-0001", 4, *NOW + 4, 70)]);
    assert_eq!(gw.stats.frames("accepted"), 1, "the next one passes");
    drop(gw);
    // A corrupt marks file stops the gateway rather than silently dropping replay protection.
    std::fs::write(dir.join(gateway_uplink::REPLAY_MARKS), b"{not json").unwrap();
    let err = Gateway::open(cfg).err().unwrap().to_string();
    assert!(err.contains("replay-marks.json is corrupt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An overloaded service answers `503` with `Retry-After: 2`: the uploader waits that long
/// before trying again, although its own backoff (10–100 ms here) would be much shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_honours_retry_after() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = devices();
    let (dir, mut cfg) = setup("retry-after", &d);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.service_url = format!("http://{}", listener.local_addr().unwrap());
    // A service that is always overloaded, recording when each upload arrived.
    let seen: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
    let log = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                log.lock().unwrap().push(std::time::Instant::now());
                let body =
                    r#"{"type":"https://vitals-ledger.example/problems/overloaded","status":503}"#;
                let resp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let gw = Gateway::open(cfg).unwrap();
    gw.receive(&[frame(&d.k1, "SN-0001", 1, *NOW, 72)]);
    let up = tokio::spawn(gateway_uplink::uploader::run(Arc::clone(&gw)));
    let t = std::time::Instant::now();
    while seen.lock().unwrap().len() < 2 && t.elapsed() < std::time::Duration::from_secs(8) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    up.abort();
    server.abort();
    let at = seen.lock().unwrap().clone();
    assert!(at.len() >= 2, "retried: {} uploads", at.len());
    let gap = at[1].duration_since(at[0]);
    assert!(
        gap >= std::time::Duration::from_millis(1900),
        "retried after {gap:?}, before the service's Retry-After"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The alarm command runs once per sensor and vital sign per interval (every alarm is still in
/// the alarm file), and its environment holds nothing of the gateway's — not its token.
#[test]
fn alarm_commands_are_rate_limited_and_get_no_secrets() {
    let d = devices();
    let (dir, mut cfg) = setup("alarm-cmd", &d);
    let paged = dir.join("paged.jsonl");
    let env = dir.join("env.txt");
    // As the binary gets it from its environment.
    std::env::set_var("GATEWAY_TOKEN", "vlt_must_not_leak");
    cfg.alarm_command = Some(format!(
        "env >> {}; cat >> {}",
        env.display(),
        paged.display()
    ));
    assert_eq!(cfg.alarm_command_interval_ms, 60_000, "the default");
    let gw = Gateway::open(cfg).unwrap();
    let now = *NOW;
    gw.receive(&[
        frame(&d.k1, "SN-0001", 1, now, 150),
        frame(&d.k1, "SN-0001", 2, now + 1, 160),
        frame(&d.k1, "SN-0001", 3, now + 2, 35),
        frame(&d.k1, "SN-0001", 4, now + 3, 170),
    ]);
    assert_eq!(gw.stats.alarms.get(), 4);
    let alarm_lines = std::fs::read_to_string(dir.join("alarms.jsonl")).unwrap();
    assert_eq!(alarm_lines.lines().count(), 4, "every alarm is recorded");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&paged).map_or(0, |s| s.lines().count()) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm command ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pages = std::fs::read_to_string(&paged).unwrap();
    assert_eq!(
        pages.lines().count(),
        1,
        "one page per sensor and vital sign: {pages}"
    );
    assert_eq!(gw.stats.alarm_commands_skipped.get(), 3);
    let seen = std::fs::read_to_string(&env).unwrap();
    assert!(
        !seen.contains("vlt_must_not_leak") && !seen.contains("GATEWAY_TOKEN"),
        "{seen}"
    );
    assert!(seen.contains("PATH="), "{seen}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With issuer CAs configured, a sensor whose certificate no configured CA issued is refused,
/// whatever issuers the (synced) registry holds.
#[test]
fn sensors_of_an_unconfigured_issuer_are_refused() {
    let d = devices();
    let now = *NOW;
    let good = frame(&d.k1, "SN-0001", 5, now, 70);
    // Only the gateway fleet CA configured: the sensor's manufacturer is not trusted.
    let fleet_only = registry(&d, vec![]).trusting(vec![d.fleet.clone()]);
    let err = frames::check(&good, &fleet_only, now, &mut HashMap::new()).unwrap_err();
    assert!(matches!(err, FrameReject::UntrustedIssuer(..)), "{err}");
    assert_eq!(err.label(), "untrusted_issuer");
    // The manufacturer configured: accepted.
    let mfr = registry(&d, vec![]).trusting(vec![d.mfr.clone()]);
    assert!(frames::check(&good, &mfr, now, &mut HashMap::new()).is_ok());
    // Nothing configured: the registry's issuers decide.
    assert!(frames::check(&good, &registry(&d, vec![]), now, &mut HashMap::new()).is_ok());
}

/// Private mode (`--household`): every accepted frame leaves sealed for the household's current
/// recipients and countersigned over the ciphertext, local alarms still fire on the plaintext,
/// message numbers go on across a restart, and a frame the gateway cannot seal for exactly its
/// household is never sent — not in clear, not to another household.
#[test]
fn private_mode_seals_every_frame_and_sends_nothing_in_clear() {
    use provenance_core::private::{PrivateEnvelope, RecipientSecret};
    let d = devices();
    let alice = RecipientSecret::derive(b"gateway test: alice");
    let now = *NOW;
    let household = |h: &str, to: &RecipientSecret| {
        vec![
            RegistryEvent::EnrollRecipient {
                household: "HH-0001".into(),
                name: "alice".into(),
                key: to.public(),
                from_ms: now - H,
            },
            RegistryEvent::BindHousehold {
                gateway_id: "GW-0001".into(),
                household: h.into(),
                from_ms: now - H,
            },
        ]
    };
    let (dir, mut cfg) = setup("private", &d);
    std::fs::write(
        dir.join(gateway_uplink::REGISTRY_CACHE),
        serde_json::to_vec(&synced(&d, household("HH-0001", &alice))).unwrap(),
    )
    .unwrap();
    cfg.household = Some("HH-0001".into());
    cfg.spool_max = 100;
    let gw = Gateway::open(cfg.clone()).unwrap();
    let frames = [
        frame(&d.k1, "SN-0001", 1, now, 150),
        frame(&d.k1, "SN-0001", 2, now + 1, 72),
    ];
    gw.receive(&frames);
    assert_eq!(gw.stats.frames("accepted"), 2);
    assert_eq!(
        gw.stats.alarms.get(),
        1,
        "the local alarm works on the plaintext"
    );
    let gateway_key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let spooled = gw.spool.lock().unwrap().peek(10).unwrap();
    let mut last = 0;
    for (r, f) in spooled.iter().zip(&frames) {
        assert!(
            GatewayEnvelope::decode(&r.bytes).is_err(),
            "nothing in clear"
        );
        let env = PrivateEnvelope::decode(&r.bytes).unwrap();
        assert_eq!(env.household, "HH-0001");
        assert!(env.msg_seq > last);
        last = env.msg_seq;
        env.verify_gateway(&gateway_key).unwrap();
        let (plain, _) = env.open(&alice).unwrap();
        assert_eq!(&plain, f, "the sensor's bytes exactly");
        assert!(!r.bytes.windows(7).any(|w| w == b"SN-0001"));
    }
    drop(gw);
    // Restarted: message numbers go on above the spooled ones.
    let gw = Gateway::open(cfg.clone()).unwrap();
    gw.receive(&[frame(&d.k1, "SN-0001", 3, now + 2, 72)]);
    let spooled = gw.spool.lock().unwrap().peek(10).unwrap();
    assert_eq!(spooled.len(), 3);
    assert!(PrivateEnvelope::decode(&spooled[2].bytes).unwrap().msg_seq > last);
    drop(gw);
    // The registry binds the gateway to another household: nothing is sent.
    for (extra, why) in [
        (household("HH-0002", &alice), "bound to another household"),
        (vec![], "bound to no household"),
    ] {
        let (dir2, mut cfg2) = setup(&format!("private-{}", extra.len()), &d);
        std::fs::write(
            dir2.join(gateway_uplink::REGISTRY_CACHE),
            serde_json::to_vec(&synced(&d, extra)).unwrap(),
        )
        .unwrap();
        cfg2.household = Some("HH-0001".into());
        let gw = Gateway::open(cfg2).unwrap();
        gw.receive(&[frame(&d.k1, "SN-0001", 1, now, 72)]);
        assert_eq!(gw.stats.frames("no_recipients"), 1, "{why}");
        assert!(
            gw.spool.lock().unwrap().is_empty(),
            "{why}: nothing spooled"
        );
        drop(gw);
        let _ = std::fs::remove_dir_all(&dir2);
    }
    // A recipient revoked: no current recipient, nothing sent.
    let mut revoked = household("HH-0001", &alice);
    revoked.push(RegistryEvent::Revoke {
        key_id: alice.public().key_id(),
        from_ms: now - H / 2,
        reason: "phone lost".into(),
    });
    let (dir3, mut cfg3) = setup("private-revoked", &d);
    std::fs::write(
        dir3.join(gateway_uplink::REGISTRY_CACHE),
        serde_json::to_vec(&synced(&d, revoked)).unwrap(),
    )
    .unwrap();
    cfg3.household = Some("HH-0001".into());
    let gw = Gateway::open(cfg3).unwrap();
    gw.receive(&[frame(&d.k1, "SN-0001", 1, now, 72)]);
    assert_eq!(gw.stats.frames("no_recipients"), 1);
    assert!(gw.spool.lock().unwrap().is_empty());
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stub service on loopback answering every request with `status` and `body` (and
/// `Retry-After: 30` with a 503); counts requests.
async fn stub(
    status: &'static str,
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
    let count = std::sync::Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nRetry-After: 30\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

/// Several service URLs (one per service node): the first is down, the second a standby that
/// answers 503 with a long Retry-After, the third ready. The gateway moves along the list at
/// once (not after the standby's 30 s) and its reading is acknowledged by the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_moves_to_a_service_node_that_is_ready() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let d = devices();
    let (dir, mut cfg) = setup("several-urls", &d);
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_url = format!("http://{}", down.local_addr().unwrap());
    drop(down); // connection refused from now on
    let (standby, standby_hits) = stub(
        "503 Service Unavailable",
        r#"{"type":"https://vitals-ledger.example/problems/standby","status":503}"#,
    )
    .await;
    let (ready, ready_hits) = stub(
        "200 OK",
        r#"{"results":[{"status":"accepted","index":7,"leaf_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}"#,
    )
    .await;
    cfg.service_url = format!("{down_url}, {standby},{ready}");
    let gw = Gateway::open(cfg).unwrap();
    assert_eq!(gw.services.all().len(), 3);
    gw.receive(&[frame(&d.k1, "SN-0001", 1, *NOW, 72)]);
    let up = tokio::spawn(gateway_uplink::uploader::run(Arc::clone(&gw)));
    let t = std::time::Instant::now();
    while gw.stats.uploaded.get() < 1 && t.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    up.abort();
    assert_eq!(gw.stats.uploaded.get(), 1, "acknowledged by the ready node");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "moved on at once, not after the standby's Retry-After ({:?})",
        t.elapsed()
    );
    assert_eq!(
        standby_hits.load(Ordering::SeqCst),
        1,
        "the standby was tried once"
    );
    assert_eq!(ready_hits.load(Ordering::SeqCst), 1);
    assert_eq!(gw.stats.service_failovers.get(), 2);
    assert_eq!(gw.services.active().1, ready, "and stays with it");
    assert_eq!(
        gw.spool.lock().unwrap().pending(),
        0,
        "nothing left to send"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
