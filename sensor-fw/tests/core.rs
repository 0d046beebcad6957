//! The signing core: counter persistence across reboots, persistence before signing, frames that
//! verify with provenance-core, and no heap allocation while signing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ed25519_dalek::SigningKey;
use provenance_core::cose::SignedReading;
use provenance_core::reading::{Decimal, Measurement};
use sensor_fw::{CounterStore, Sensor, SensorError};
use std::cell::RefCell;
use std::rc::Rc;

/// Simulated flash shared across "reboots"; can be made to fail.
#[derive(Clone, Default)]
struct Flash(Rc<RefCell<(u64, bool, usize)>>); // (stored next, failing, writes)

impl CounterStore for Flash {
    type Error = &'static str;
    fn load(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.borrow().0)
    }
    fn store(&mut self, next: u64) -> Result<(), Self::Error> {
        let mut f = self.0.borrow_mut();
        if f.1 {
            return Err("flash write failed");
        }
        f.0 = next;
        f.2 += 1;
        Ok(())
    }
}

fn vitals() -> [Measurement; 2] {
    [
        Measurement::new("8867-4", Decimal::new(72, 0)).unwrap(),
        Measurement::new("2708-6", Decimal::new(98, 0)).unwrap(),
    ]
}

#[test]
fn counter_survives_reboot_and_frames_verify() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let flash = Flash::default();
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    for boot in 0..3 {
        let mut s = Sensor::boot(key.clone(), "SN-0042", flash.clone()).unwrap();
        for i in 0..5 {
            let frame = s
                .sign(1_767_225_600_000 + boot * 100 + i, &vitals(), &mut buf)
                .unwrap();
            let r = SignedReading::decode(frame).unwrap();
            r.verify(&key.verifying_key()).unwrap();
            seen.push(r.reading.seq);
        }
        // Reboot: drop the sensor; the flash keeps the counter.
    }
    assert_eq!(
        seen,
        (0..15).collect::<Vec<u64>>(),
        "strictly increasing across reboots, never reused"
    );
    assert_eq!(flash.0.borrow().0, 15);
}

#[test]
fn no_frame_without_a_persisted_counter() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let flash = Flash::default();
    let mut s = Sensor::boot(key, "SN-0042", flash.clone()).unwrap();
    let mut buf = [0u8; 512];
    s.sign(1, &vitals(), &mut buf).unwrap();
    flash.0.borrow_mut().1 = true;
    assert!(matches!(
        s.sign(2, &vitals(), &mut buf),
        Err(SensorError::Storage(_))
    ));
    assert_eq!(s.next_seq(), 1, "a failed persist consumes no number");
    flash.0.borrow_mut().1 = false;
    let frame = s.sign(3, &vitals(), &mut buf).unwrap();
    assert_eq!(SignedReading::decode(frame).unwrap().reading.seq, 1);
}

#[test]
fn signing_does_not_allocate() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let mut s = Sensor::boot(key, "SN-0042", Flash::default()).unwrap();
    let m = vitals();
    let mut buf = [0u8; 512];
    let mut n = 0;
    let info = allocation_counter::measure(|| {
        n = s
            .sign(1_767_225_600_000, &m, &mut buf)
            .map(<[u8]>::len)
            .unwrap();
    });
    assert!(n > 100);
    assert_eq!(info.count_total, 0, "the signing path allocated");
    // The check can fail: the allocating path (coset, ciborium) does allocate.
    let r = provenance_core::reading::Reading {
        sensor_id: "SN-0042".into(),
        seq: 9,
        measured_at_ms: 1,
        measurements: m.to_vec(),
    };
    let key = SigningKey::from_bytes(&[4; 32]);
    let info = allocation_counter::measure(|| {
        SignedReading::sign(&r, &key).unwrap();
    });
    assert!(info.count_total > 0);
}

#[test]
fn bad_input_is_refused() {
    let key = SigningKey::from_bytes(&[4; 32]);
    assert!(matches!(
        Sensor::boot(key, "bad id!", Flash::default()),
        Err(SensorError::SensorId)
    ));
    let mut tiny = [0u8; 16];
    let key = SigningKey::from_bytes(&[4; 32]);
    let mut s = Sensor::boot(key, "SN-1", Flash::default()).unwrap();
    assert!(matches!(
        s.sign(1, &vitals(), &mut tiny),
        Err(SensorError::Sign(_))
    ));
}
