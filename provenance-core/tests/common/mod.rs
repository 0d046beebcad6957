//! Fixed, test-only keys and certificates shared by the integration tests and the test vectors.
//! The seeds are public: never use them outside tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // shared by several test crates

use ed25519_dalek::SigningKey;
use provenance_core::cert::{self, CertParams, DeviceCert, Role};
use provenance_core::keys::KeyId;
use provenance_core::note::NoteSigner;
use provenance_core::reading::{Decimal, Measurement, Reading};
use provenance_core::registry::RegistryEvent;

/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;
/// One year in ms.
pub const YEAR: u64 = 365 * 24 * 3600 * 1000;
/// The log origin of the vectors.
pub const ORIGIN: &str = "ledger.example.org/vitals/test";

/// A signing key from a one-byte test seed label.
pub fn key(label: &str) -> SigningKey {
    use sha2::{Digest, Sha256};
    SigningKey::from_bytes(&Sha256::digest(format!("provenance-core test seed: {label}")).into())
}

pub struct Fixture {
    /// The sensor manufacturer's CA (issues the sensor).
    pub ca_key: SigningKey,
    pub ca: DeviceCert,
    /// The gateway fleet's CA (issues the gateway).
    pub fleet_key: SigningKey,
    pub fleet: DeviceCert,
    pub sensor_key: SigningKey,
    pub sensor: DeviceCert,
    pub gateway_key: SigningKey,
    pub gateway: DeviceCert,
    pub log: NoteSigner,
}

pub fn params(cn: &str, serial: u64) -> CertParams<'_> {
    CertParams {
        common_name: cn,
        organization: "Example Medical Devices",
        serial,
        not_before_ms: T0,
        not_after_ms: T0 + 5 * YEAR,
    }
}

pub fn fixture() -> Fixture {
    let ca_key = key("issuer-ca");
    let ca = cert::issue_ca(&ca_key, &params("Example Medical Devices Issuer CA", 1)).unwrap();
    let sensor_key = key("sensor SN-0001");
    let sensor = cert::issue_device(
        &ca_key,
        &ca,
        Role::Sensor,
        &sensor_key.verifying_key(),
        &params("SN-0001", 2),
    )
    .unwrap();
    let fleet_key = key("fleet-ca");
    let fleet = cert::issue_ca(&fleet_key, &params("Example Gateway Fleet CA", 10)).unwrap();
    let gateway_key = key("gateway GW-0001");
    let gateway = cert::issue_device(
        &fleet_key,
        &fleet,
        Role::Gateway,
        &gateway_key.verifying_key(),
        &params("GW-0001", 3),
    )
    .unwrap();
    let log = NoteSigner::new(ORIGIN, key("log")).unwrap();
    Fixture {
        ca_key,
        ca,
        fleet_key,
        fleet,
        sensor_key,
        sensor,
        gateway_key,
        gateway,
        log,
    }
}

pub fn reading(seq: u64) -> Reading {
    Reading {
        sensor_id: "SN-0001".into(),
        seq,
        measured_at_ms: T0 + 3_600_000 + seq * 5000,
        measurements: vec![
            Measurement::new("8867-4", Decimal::new(72, 0)).unwrap(),
            Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
            Measurement::new("8310-5", Decimal::new(372, -1)).unwrap(),
        ],
    }
}

/// One registry event of each common kind, for the fixture's devices (the vectors' events; the
/// fleet CA's enrollment is [`fleet_enrollment`]).
pub fn registry_events(f: &Fixture) -> Vec<RegistryEvent> {
    vec![
        RegistryEvent::EnrollIssuer {
            cert: f.ca.der().to_vec(),
            role: provenance_core::registry::IssuerRole::SensorManufacturer,
        },
        RegistryEvent::EnrollSensor {
            cert: f.sensor.der().to_vec(),
        },
        RegistryEvent::EnrollGateway {
            cert: f.gateway.der().to_vec(),
        },
        RegistryEvent::Bind {
            sensor_id: "SN-0001".into(),
            gateway_id: "GW-0001".into(),
            from_ms: T0,
            until_ms: None,
        },
        RegistryEvent::AssignPatient {
            sensor_id: "SN-0001".into(),
            pseudonym: "patient-7f3a".into(),
            from_ms: T0,
        },
        RegistryEvent::Revoke {
            key_id: KeyId([0xab; 20]),
            from_ms: T0 + YEAR,
            reason: "example".into(),
        },
    ]
}

/// The enrollment of the fixture's gateway fleet CA.
pub fn fleet_enrollment(f: &Fixture) -> RegistryEvent {
    RegistryEvent::EnrollIssuer {
        cert: f.fleet.der().to_vec(),
        role: provenance_core::registry::IssuerRole::GatewayFleet,
    }
}

/// A deterministic "random" source for test vectors: SHA-256 of a label and a counter. Never a
/// source of secrets outside tests.
pub struct TestRng {
    label: String,
    counter: u64,
    buf: Vec<u8>,
}

impl TestRng {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            counter: 0,
            buf: Vec::new(),
        }
    }
}

impl hpke::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        use sha2::{Digest, Sha256};
        for d in dst.iter_mut() {
            if self.buf.is_empty() {
                self.buf = Sha256::digest(format!("{} {}", self.label, self.counter)).to_vec();
                self.counter += 1;
            }
            *d = self.buf.remove(0);
        }
    }
}

impl hpke::rand_core::CryptoRng for TestRng {}

/// The private-mode household of the vectors.
pub const HOUSEHOLD: &str = "HH-0001";

/// A recipient's test key pair, derived (RFC 9180 DeriveKeyPair) from a public label.
pub fn recipient(label: &str) -> provenance_core::private::RecipientSecret {
    provenance_core::private::RecipientSecret::derive(
        format!("provenance-core test recipient: {label}").as_bytes(),
    )
}
