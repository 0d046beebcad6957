//! Benchmark of `ledger-verify export`: writes a log archive of N doubly signed readings (from
//! 100 sensors through 4 gateways, with their registry events), then verifies it as the command
//! does and prints the throughput.
//!
//!   cargo run --release -p verifier-cli --example export_bench -- [READINGS] [START]
//!
//! READINGS defaults to 200000; START (default 0) makes an incremental archive of the entries
//! from START on (the registry before it then comes as a proved prelude).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ed25519_dalek::SigningKey;
use provenance_core::archive::{
    entry_file_name, ArchiveManifest, EntryLine, ARCHIVE_MEDIA_TYPE, ENTRIES_PER_FILE,
};
use provenance_core::bundle::ProvedEntry;
use provenance_core::cert::{self, CertParams, Role};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{DecodedBody, EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::NoteSigner;
use provenance_core::reading::{Decimal, Measurement, Reading};
use provenance_core::registry::{IssuerRole, RegistryEvent};
use provenance_core::registry_state::{registry_extension, RegistryState};
use provenance_core::tlog_proof::TlogProof;
use rayon::prelude::*;
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use verifier_cli::trust::Trust;

fn key(label: &str) -> SigningKey {
    use sha2::Digest;
    SigningKey::from_bytes(&sha2::Sha256::digest(label.as_bytes()).into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let start: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 86_400_000;
    let params = |cn: &'static str, serial| CertParams {
        common_name: cn,
        organization: "Bench",
        serial,
        not_before_ms: now - 30 * day,
        not_after_ms: now + 365 * day,
    };
    let ca_key = key("ca");
    let ca = cert::issue_ca(&ca_key, &params("Bench CA", 1)).unwrap();
    let fleet_key = key("fleet ca");
    let fleet = cert::issue_ca(&fleet_key, &params("Bench Fleet CA", 2)).unwrap();
    let ids: Vec<&'static str> = (0..104)
        .map(|i| &*Box::leak(format!("DEV-{i:04}").into_boxed_str()))
        .collect();
    let devices: Vec<(SigningKey, cert::DeviceCert)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let role = if i < 100 { Role::Sensor } else { Role::Gateway };
            let k = key(id);
            let (ik, ic) = if i < 100 {
                (&ca_key, &ca)
            } else {
                (&fleet_key, &fleet)
            };
            let c =
                cert::issue_device(ik, ic, role, &k.verifying_key(), &params(id, 10 + i as u64))
                    .unwrap();
            (k, c)
        })
        .collect();
    // Registry events are logged a day ago; each reading a second after its gateway received
    // it (logging times never go back along the log).
    let entry_at = |kind, body: Vec<u8>, logged_at_ms: u64| {
        LogEntry {
            kind,
            body,
            logged_at_ms,
        }
        .to_cbor()
    };
    let entry = |kind, body: Vec<u8>| entry_at(kind, body, now - day);
    let mut leaves = vec![
        entry(
            EntryKind::Registry,
            RegistryEvent::EnrollIssuer {
                cert: ca.der().to_vec(),
                role: IssuerRole::SensorManufacturer,
            }
            .to_cbor()
            .unwrap(),
        ),
        entry(
            EntryKind::Registry,
            RegistryEvent::EnrollIssuer {
                cert: fleet.der().to_vec(),
                role: IssuerRole::GatewayFleet,
            }
            .to_cbor()
            .unwrap(),
        ),
    ];
    for (i, (_, c)) in devices.iter().enumerate() {
        let ev = if i < 100 {
            RegistryEvent::EnrollSensor {
                cert: c.der().to_vec(),
            }
        } else {
            RegistryEvent::EnrollGateway {
                cert: c.der().to_vec(),
            }
        };
        leaves.push(entry(EntryKind::Registry, ev.to_cbor().unwrap()));
    }
    for s in 0..100 {
        let ev = RegistryEvent::Bind {
            sensor_id: ids[s].into(),
            gateway_id: ids[100 + s % 4].into(),
            from_ms: now - 2 * day,
            until_ms: None,
        };
        leaves.push(entry(EntryKind::Registry, ev.to_cbor().unwrap()));
    }
    let t = Instant::now();
    let readings: Vec<Vec<u8>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let s = (i % 100) as usize;
            let at = now - day + i;
            let r = Reading {
                sensor_id: ids[s].into(),
                seq: i / 100,
                measured_at_ms: at,
                measurements: vec![
                    Measurement::new("8867-4", Decimal::new(60 + (i % 40) as i64, 0)).unwrap(),
                    Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
                    Measurement::new("8310-5", Decimal::new(368, -1)).unwrap(),
                ],
            };
            let inner = SignedReading::sign(&r, &devices[s].0).unwrap();
            let env = GatewayEnvelope::wrap(&inner, at + 150, &devices[100 + s % 4].0);
            entry_at(EntryKind::Reading, env, at + 1150)
        })
        .collect();
    // The registry commitment the checkpoint carries, as the service's sequencer makes it.
    let mut registry = RegistryState::new();
    for (i, l) in leaves.iter().enumerate() {
        let e = LogEntry::from_cbor(l).unwrap();
        let DecodedBody::Registry(ev) = e.decode_body().unwrap() else {
            unreachable!()
        };
        registry.apply(i as u64, e.logged_at_ms, &ev).unwrap();
    }
    leaves.extend(readings);
    let size = leaves.len() as u64;
    let mut tree = MemoryTree::new();
    for l in &leaves {
        tree.push_data(l);
    }
    let signer = NoteSigner::new("bench.example/vitals", key("log")).unwrap();
    let note = Checkpoint {
        origin: signer.name().into(),
        size,
        root: tree.root_at(size).unwrap(),
        extensions: vec![registry_extension(
            registry.event_count(),
            &registry.registry_root(),
        )],
    }
    .sign(&signer)
    .unwrap();

    let dir = std::env::temp_dir().join(format!("export-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("log")).unwrap();
    let mut entry_files = Vec::new();
    let mut file: Option<std::io::BufWriter<std::fs::File>> = None;
    for idx in start..size {
        if idx == start || idx % ENTRIES_PER_FILE == 0 {
            let name = entry_file_name(idx);
            file = Some(std::io::BufWriter::new(
                std::fs::File::create(dir.join(&name)).unwrap(),
            ));
            entry_files.push(name);
        }
        let f = file.as_mut().unwrap();
        writeln!(f, "{}", EntryLine::encode(idx, &leaves[idx as usize])).unwrap();
    }
    drop(file);
    let registry_prelude = (0..start.min(registry.event_count()))
        .map(|i| {
            let proof = TlogProof {
                extra: None,
                index: i,
                hashes: merkle::inclusion_proof(&tree, i, size).unwrap(),
                checkpoint: note.clone(),
            };
            ProvedEntry::new(&leaves[i as usize], &proof)
        })
        .collect();
    let manifest = ArchiveManifest {
        media_type: ARCHIVE_MEDIA_TYPE.into(),
        origin: signer.name().into(),
        start,
        end: size,
        checkpoint: note,
        frontier: merkle::frontier(&tree, start)
            .unwrap()
            .iter()
            .map(|h| B64.encode(h))
            .collect(),
        entry_files,
        registry_prelude,
        created_at_ms: now,
    };
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    let bytes: u64 = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "archive: {} entries ({} readings) in {:.1} MB, written in {:.1} s",
        size - start,
        n,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let mut trust = Trust::log_only(signer.verifier());
    trust.issuers.push(ca);
    trust.issuers.push(fleet);
    let t = Instant::now();
    let report = verifier_cli::export::verify_export(&dir, &trust, false);
    let secs = t.elapsed().as_secs_f64();
    assert!(report.verified, "{}", report.human());
    let verified = (size - start).min(n);
    let threads = rayon::current_num_threads();
    let rate = verified as f64 / secs;
    println!(
        "ledger-verify export: {verified} readings verified in {secs:.2} s = {rate:.0} readings/s on {threads} threads"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The ceiling, same machine, same run: two signatures per reading.
    let ceiling = provenance_core::keys::batch_verification_rate(threads) / 2.0;
    println!("Ed25519 batch ceiling: {ceiling:.0} doubly signed readings/s on {threads} threads");
    println!(
        "ratio to the ceiling: {:.0} % (export verification / Ed25519 batch ceiling, same run)",
        100.0 * rate / ceiling
    );
}
