//! Micro-benchmarks of provenance-core's hot paths, on one core:
//!
//! ```sh
//! cargo run --release -p provenance-core --example core_bench
//! ```
//!
//! Prints Ed25519 strict and batch verification rates (the ingest ceiling the service's benchmark
//! reports beside its own figures), envelope decoding, leaf hashing, and RFC 9162 proof generation
//! and verification on a one-million-leaf in-memory tree. Results: docs/PERFORMANCE.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark of fixed inputs

use ed25519_dalek::{Signer, SigningKey};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::keys::{self, BatchVerifier};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::reading::{Decimal, Measurement, Reading};
use std::hint::black_box;
use std::time::Instant;

fn rate(label: &str, n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let secs = t.elapsed().as_secs_f64();
    let per_sec = n as f64 / secs;
    println!(
        "{label:<58} {per_sec:>12.0} /s   {:>9.2} µs each",
        secs * 1e6 / n as f64
    );
    per_sec
}

fn main() {
    let sensor = SigningKey::from_bytes(&[1; 32]);
    let gateway = SigningKey::from_bytes(&[2; 32]);
    let n = 20_000usize;
    let envelopes: Vec<Vec<u8>> = (0..n as u64)
        .map(|seq| {
            let r = Reading {
                sensor_id: "SN-0001".into(),
                seq,
                measured_at_ms: 1_767_225_600_000 + seq,
                measurements: vec![
                    Measurement::new("8867-4", Decimal::new(72, 0)).unwrap(),
                    Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
                    Measurement::new("8310-5", Decimal::new(372, -1)).unwrap(),
                ],
            };
            GatewayEnvelope::wrap(&SignedReading::sign(&r, &sensor).unwrap(), 1, &gateway)
        })
        .collect();
    println!(
        "provenance-core micro-benchmarks, one core, {n} doubly signed envelopes ({} bytes each)\n",
        envelopes[0].len()
    );

    let msgs: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().repeat(8)).collect();
    let sigs: Vec<_> = msgs.iter().map(|m| sensor.sign(m)).collect();
    let vk = sensor.verifying_key();
    let single = rate("Ed25519 verify_signature (single signatures)", n, || {
        for (m, s) in msgs.iter().zip(&sigs) {
            assert!(keys::verify_signature(&vk, black_box(m), s));
        }
    });
    for batch in [64usize, 256] {
        rate(
            &format!("Ed25519 batch verification, batches of {batch}"),
            n,
            || {
                for chunk in msgs.chunks(batch).zip(sigs.chunks(batch)) {
                    let mut b = BatchVerifier::new();
                    for (m, s) in chunk.0.iter().zip(chunk.1) {
                        b.push(vk, m.clone(), *s);
                    }
                    assert!(b.verify().is_ok());
                }
            },
        );
    }
    let decoded = rate(
        "envelope decode (both layers, no signature checks)",
        n,
        || {
            for e in &envelopes {
                black_box(GatewayEnvelope::decode(e).unwrap());
            }
        },
    );
    let full = rate(
        "envelope decode + batch-verify both layers (batches of 128)",
        n,
        || {
            for chunk in envelopes.chunks(128) {
                let mut b = BatchVerifier::new();
                for e in chunk {
                    let env = GatewayEnvelope::decode(e).unwrap();
                    let (m, s) = env.signed_data();
                    b.push(gateway.verifying_key(), m, s);
                    let (m, s) = env.sensor.signed_data();
                    b.push(sensor.verifying_key(), m, s);
                }
                assert!(b.verify().is_ok());
            }
        },
    );
    println!("    -> one core verifies {:.0} doubly signed readings/s ({:.1}x single-signature rate / 2)", full, full / (single / 2.0));
    let _ = decoded;

    let leaves: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| {
            LogEntry {
                kind: EntryKind::Reading,
                body: e.clone(),
                logged_at_ms: 1,
            }
            .to_cbor()
        })
        .collect();
    rate("log entry encode + RFC 9162 leaf hash", n, || {
        for l in &leaves {
            black_box(merkle::leaf_hash(l));
        }
    });

    let size = 1u64 << 20;
    let mut tree = MemoryTree::new();
    let t = Instant::now();
    for i in 0..size {
        tree.push_leaf_hash(merkle::leaf_hash(&i.to_le_bytes()));
    }
    println!(
        "{:<58} {:>12.0} /s",
        "append to in-memory tree (1,048,576 leaves)",
        size as f64 / t.elapsed().as_secs_f64()
    );
    let root = tree.root_at(size - 3).unwrap();
    let idx: Vec<u64> = (0..10_000u64)
        .map(|i| (i * 7_919_113) % (size - 3))
        .collect();
    let mut proofs = Vec::new();
    rate(
        "inclusion proof generation at 1M leaves (from HashReader)",
        idx.len(),
        || {
            for &i in &idx {
                proofs.push(merkle::inclusion_proof(&tree, i, size - 3).unwrap());
            }
        },
    );
    rate(
        "inclusion proof verification at 1M leaves",
        idx.len(),
        || {
            for (&i, p) in idx.iter().zip(&proofs) {
                merkle::verify_inclusion(
                    i,
                    size - 3,
                    &merkle::leaf_hash(&i.to_le_bytes()),
                    p,
                    &root,
                )
                .unwrap();
            }
        },
    );
    rate(
        "consistency proof generation + verification at 1M leaves",
        2_000,
        || {
            for k in 1..=2_000u64 {
                let m = k * 500;
                let p = merkle::consistency_proof(&tree, m, size - 3).unwrap();
                merkle::verify_consistency(m, size - 3, &tree.root_at(m).unwrap(), &root, &p)
                    .unwrap();
            }
        },
    );
}
