//! Private mode's costs, on one core: the gateway's encrypt + countersign, the owner's app's
//! decrypt + verify, beside the operations they are made of (X25519, Ed25519) and the plain
//! countersignature, all measured in the same run:
//!
//! ```sh
//! cargo run --release -p provenance-core --example private_bench
//! ```
//!
//! Results: docs/PERFORMANCE.md ("Issue #17").
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark of fixed inputs

use ed25519_dalek::{Signer, SigningKey};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::private::{PrivateEnvelope, RecipientSecret, Seal};
use provenance_core::reading::{Decimal, Measurement, Reading};
use std::hint::black_box;
use std::time::Instant;

fn rate(label: &str, n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let secs = t.elapsed().as_secs_f64();
    let per_sec = n as f64 / secs;
    println!(
        "{label:<62} {per_sec:>10.0} /s   {:>8.1} µs each",
        secs * 1e6 / n as f64
    );
    per_sec
}

fn main() {
    let sensor = SigningKey::from_bytes(&[1; 32]);
    let gateway = SigningKey::from_bytes(&[2; 32]);
    let n = 5_000usize;
    let readings: Vec<Vec<u8>> = (0..n as u64)
        .map(|seq| {
            let r = Reading {
                sensor_id: "TH-0001".into(),
                seq,
                measured_at_ms: 1_767_225_600_000 + seq * 5000,
                measurements: vec![Measurement::new("60832-3", Decimal::new(214, -1)).unwrap()],
            };
            SignedReading::sign(&r, &sensor).unwrap()
        })
        .collect();
    let recipients: Vec<RecipientSecret> = (0..4u8)
        .map(|i| RecipientSecret::derive(&[b'r', i]))
        .collect();
    println!(
        "private mode, one core, {n} signed readings ({} bytes each)\n",
        readings[0].len()
    );

    // The machine's limits for what sealing is made of.
    let pts: Vec<[u8; 32]> = recipients.iter().map(|r| r.public().0).collect();
    let x = rate("X25519 scalar multiplication (curve25519-dalek)", n, || {
        for i in 0..n {
            black_box(
                curve25519_dalek::montgomery::MontgomeryPoint(pts[i % 4])
                    .mul_clamped([i as u8; 32]),
            );
        }
    });
    let sign = rate("Ed25519 sign", n, || {
        for r in &readings {
            black_box(gateway.sign(r));
        }
    });
    let plain = rate("plain countersignature (GatewayEnvelope::wrap)", n, || {
        for r in &readings {
            black_box(GatewayEnvelope::wrap(r, 1, &gateway));
        }
    });
    let mut sealed = Vec::new();
    let mut seal_rates = Vec::new();
    for k in [1usize, 2, 4] {
        let keys: Vec<_> = recipients[..k].iter().map(|r| r.public()).collect();
        let label = format!("gateway: seal for {k} recipient(s) + countersign");
        let mut out = Vec::with_capacity(n);
        let r = rate(&label, n, || {
            for (i, r) in readings.iter().enumerate() {
                out.push(
                    Seal {
                        gateway: &gateway,
                        received_at_ms: 1_767_225_600_000 + i as u64 * 5000,
                        household: "HH-0001",
                        msg_seq: i as u64 + 1,
                    }
                    .seal_os(r, &keys)
                    .unwrap(),
                );
            }
        });
        seal_rates.push((k, r, out[0].len()));
        if k == 2 {
            sealed = out;
        }
    }
    let me = &recipients[1];
    let gk = gateway.verifying_key();
    let sk = sensor.verifying_key();
    let open = rate("app: decode + open (HPKE + AEAD), 2 recipients", n, || {
        for b in &sealed {
            let env = PrivateEnvelope::decode(b).unwrap();
            black_box(env.open(me).unwrap());
        }
    });
    let app = rate(
        "app: decode + gateway signature + open + sensor signature",
        n,
        || {
            for b in &sealed {
                let env = PrivateEnvelope::decode(b).unwrap();
                env.verify_gateway(&gk).unwrap();
                let (_, sr) = env.open(me).unwrap();
                sr.verify(&sk).unwrap();
            }
        },
    );
    let cloud = rate(
        "cloud: decode + gateway signature (what it can check)",
        n,
        || {
            for b in &sealed {
                let env = PrivateEnvelope::decode(b).unwrap();
                env.verify_gateway(&gk).unwrap();
            }
        },
    );
    println!();
    for (k, r, len) in seal_rates {
        println!(
            "seal for {k}: {len} bytes an envelope; {:.2} of the plain countersignature's rate; {:.1} X25519 multiplications' time each (2 per recipient: the ephemeral key and the shared secret)",
            r / plain,
            x / r
        );
    }
    println!(
        "app: a message costs {:.2} X25519 multiplications' time (HPKE's decapsulation needs 2: the shared secret and the recipient's public key in its context); cloud: {:.0} /s; Ed25519 sign {:.0} /s",
        x / app,
        cloud,
        sign
    );
    let _ = open;
}
