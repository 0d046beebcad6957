//! The sensor firmware's signing core (`no_std`, no heap allocation on the signing path).
//!
//! [`Sensor`] holds the key put into the sensor at production and a [`CounterStore`] for its
//! sequence counter. [`Sensor::sign`] takes the next sequence number, **persists the counter
//! before** encoding and signing the reading (so a reading with that number can never leave the
//! sensor twice, even across a power loss right after it was sent), and writes the tagged
//! COSE_Sign1 frame into the caller's buffer with `provenance_core::sensor::sign_reading`.
//!
//! Storage is a trait so the same core runs on flash/EEPROM on a device and on a file in the
//! host simulator (`sensor-sim`, issue #4).
#![no_std]

#[cfg(feature = "sim")]
pub mod physiology;

use ed25519_dalek::SigningKey;
use provenance_core::reading::Measurement;
use provenance_core::sensor::{sign_reading, ReadingRef, SignError};

/// Persistent storage for the sequence counter.
pub trait CounterStore {
    /// Storage failure.
    type Error: core::fmt::Debug;
    /// The next sequence number to use (0 on a new sensor).
    fn load(&mut self) -> Result<u64, Self::Error>;
    /// Durably records that `next` is the next sequence number to use. It must be on stable
    /// storage when this returns.
    fn store(&mut self, next: u64) -> Result<(), Self::Error>;
}

/// Why a reading was not produced.
#[derive(Debug, thiserror::Error)]
pub enum SensorError<E: core::fmt::Debug> {
    /// The counter could not be persisted: no reading may leave the sensor.
    #[error("counter storage failed: {0:?}")]
    Storage(E),
    /// The reading could not be encoded.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The counter is exhausted (2^62 readings).
    #[error("sequence counter exhausted")]
    Exhausted,
    /// The sensor id is not 1..64 of `[A-Za-z0-9._:-]`.
    #[error("invalid sensor id")]
    SensorId,
}

/// The sensor's signing core.
pub struct Sensor<S: CounterStore> {
    key: SigningKey,
    /// The sensor id, as provisioned (ASCII, at most 64 bytes).
    id: [u8; 64],
    id_len: usize,
    next_seq: u64,
    store: S,
}

/// The largest sequence number the ledger accepts (it rejects 2^62 and above).
pub const MAX_SEQ: u64 = (1 << 62) - 1;

impl<S: CounterStore> Sensor<S> {
    /// Boots the sensor: checks its id and loads the counter from storage.
    pub fn boot(
        key: SigningKey,
        sensor_id: &str,
        mut store: S,
    ) -> Result<Self, SensorError<S::Error>> {
        if !provenance_core::reading::valid_device_id(sensor_id) {
            return Err(SensorError::SensorId);
        }
        let mut id = [0u8; 64];
        id[..sensor_id.len()].copy_from_slice(sensor_id.as_bytes());
        let next_seq = store.load().map_err(SensorError::Storage)?;
        Ok(Self {
            key,
            id,
            id_len: sensor_id.len(),
            next_seq,
            store,
        })
    }

    /// The sequence number the next reading will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sensor id.
    pub fn sensor_id(&self) -> &str {
        // Checked at boot: ASCII, so valid UTF-8.
        core::str::from_utf8(&self.id[..self.id_len]).unwrap_or("")
    }

    /// The storage (for inspection by tests and the simulator).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Takes the next sequence number, persists the counter, then encodes and signs the reading
    /// into `out`; returns the frame. Allocation-free.
    pub fn sign<'o>(
        &mut self,
        measured_at_ms: u64,
        measurements: &[Measurement],
        out: &'o mut [u8],
    ) -> Result<&'o [u8], SensorError<S::Error>> {
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(SensorError::Exhausted);
        }
        // Persist first: if the frame leaves and the sensor reboots, the number is never reused.
        self.store.store(seq + 1).map_err(SensorError::Storage)?;
        self.next_seq = seq + 1;
        let reading = ReadingRef {
            sensor_id: self.sensor_id(),
            seq,
            measured_at_ms,
            measurements,
        };
        let n = sign_reading(&reading, &self.key, out)?;
        Ok(&out[..n])
    }
}
