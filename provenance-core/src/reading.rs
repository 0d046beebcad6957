//! The sensor reading: the payload a sensor signs.
//!
//! ```cddl
//! reading = {
//!   0: 1,                     ; format version
//!   1: sensor-id,             ; tstr, 1..64 of [A-Za-z0-9._:-]
//!   2: uint,                  ; sequence number, strictly increasing per sensor
//!   3: uint,                  ; measured-at, Unix time in milliseconds
//!   4: [+ measurement],       ; 1..16 measurements, LOINC codes distinct
//! }
//! measurement = [ loinc: tstr, value: decimal, unit: tstr ]   ; unit is UCUM
//! decimal = #6.4([exponent: int, mantissa: int])               ; RFC 8949 §3.4.4
//! ```
//!
//! Values are decimal fractions, not floats: `37.2 Cel` is `4([-1, 372])`, exactly what the
//! sensor measured, with no binary rounding. Only the vital signs in [`VITALS`] (and the home measurements in [`ENVIRONMENT`]) are accepted,
//! each with its one UCUM unit.

use crate::cbor::{self, CborError, MapReader};
use alloc::{string::String, vec, vec::Vec};
use ciborium::value::{Integer, Value};

/// The reading format version this code writes and reads.
pub const READING_VERSION: u64 = 1;
/// Largest encoded reading accepted.
pub const MAX_READING_LEN: usize = 1024;
/// Most measurements in one reading.
pub const MAX_MEASUREMENTS: usize = 16;

/// A vital sign the system knows: LOINC code, UCUM unit, display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vital {
    /// LOINC code.
    pub loinc: &'static str,
    /// UCUM unit (case-sensitive code).
    pub unit: &'static str,
    /// Human name.
    pub name: &'static str,
}

/// The vital signs of SPEC.md §4, with their units.
pub const VITALS: &[Vital] = &[
    Vital {
        loinc: "8310-5",
        unit: "Cel",
        name: "body temperature",
    },
    Vital {
        loinc: "8867-4",
        unit: "/min",
        name: "heart rate",
    },
    Vital {
        loinc: "2708-6",
        unit: "%",
        name: "oxygen saturation (SpO2)",
    },
    Vital {
        loinc: "9279-1",
        unit: "/min",
        name: "respiratory rate",
    },
    Vital {
        loinc: "8480-6",
        unit: "mm[Hg]",
        name: "systolic blood pressure",
    },
    Vital {
        loinc: "8462-4",
        unit: "mm[Hg]",
        name: "diastolic blood pressure",
    },
];

/// What a home's sensors measure besides vital signs (private mode, issue #17): accepted in
/// readings like the vital signs, but no clinical rule (NEWS2, charts, the ward) uses them.
pub const ENVIRONMENT: &[Vital] = &[Vital {
    loinc: "60832-3",
    unit: "Cel",
    name: "room temperature",
}];

/// Looks up a vital sign (or an [`ENVIRONMENT`] measurement) by LOINC code.
pub fn vital(loinc: &str) -> Option<&'static Vital> {
    VITALS.iter().chain(ENVIRONMENT).find(|v| v.loinc == loinc)
}

/// Why a reading was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadingError {
    /// Bad CBOR.
    #[error(transparent)]
    Cbor(#[from] CborError),
    /// Unsupported format version.
    #[error("unsupported reading version {0}")]
    Version(u64),
    /// Sensor id empty, too long or with characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid sensor id")]
    SensorId,
    /// No measurements, too many, or a LOINC code twice.
    #[error("a reading needs 1 to 16 measurements with distinct LOINC codes")]
    MeasurementCount,
    /// LOINC code not one of the supported vital signs.
    #[error("unsupported LOINC code {0:?}")]
    UnknownLoinc(String),
    /// Unit does not match the vital sign's UCUM unit.
    #[error("LOINC {loinc} must be in UCUM unit {want:?}, not {got:?}")]
    WrongUnit {
        /// LOINC code.
        loinc: &'static str,
        /// Expected UCUM unit.
        want: &'static str,
        /// Unit found.
        got: String,
    },
    /// Decimal out of range.
    #[error("measurement value out of range")]
    Value,
}

/// A device identifier (sensor or gateway): 1..=64 characters of `[A-Za-z0-9._:-]`.
pub fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An exact decimal value `mantissa × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// Signed mantissa.
    pub mantissa: i64,
    /// Power of ten, -18..=18.
    pub exponent: i8,
}

impl Decimal {
    /// `mantissa × 10^exponent`.
    pub const fn new(mantissa: i64, exponent: i8) -> Self {
        Self { mantissa, exponent }
    }

    /// The value as a float, for display and alert rules only (never for storage or signing).
    pub fn to_f64(self) -> f64 {
        let mut v = self.mantissa as f64;
        let mut e = self.exponent;
        while e > 0 {
            v *= 10.0;
            e -= 1;
        }
        while e < 0 {
            v /= 10.0;
            e += 1;
        }
        v
    }

    fn to_value(self) -> Value {
        Value::Tag(
            4,
            alloc::boxed::Box::new(Value::Array(vec![
                Value::Integer(Integer::from(self.exponent)),
                Value::Integer(Integer::from(self.mantissa)),
            ])),
        )
    }

    fn from_value(v: Value) -> Result<Self, ReadingError> {
        let Value::Tag(4, inner) = v else {
            return Err(CborError::Structure("value must be a decimal fraction (tag 4)").into());
        };
        let Value::Array(parts) = *inner else {
            return Err(CborError::Structure("decimal fraction must be an array").into());
        };
        let [e, m] = <[Value; 2]>::try_from(parts)
            .map_err(|_| CborError::Structure("decimal fraction must have 2 elements"))?;
        let exponent = cbor::as_i64(&e)
            .and_then(|e| i8::try_from(e).ok())
            .filter(|e| (-18..=18).contains(e))
            .ok_or(ReadingError::Value)?;
        let mantissa = cbor::as_i64(&m).ok_or(ReadingError::Value)?;
        Ok(Self { mantissa, exponent })
    }
}

impl core::fmt::Display for Decimal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.exponent >= 0 {
            write!(f, "{}", self.mantissa)?;
            for _ in 0..self.exponent {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let digits = alloc::format!("{}", self.mantissa.unsigned_abs());
        let scale = usize::from(self.exponent.unsigned_abs());
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

/// One measurement: a LOINC-coded vital sign, its value and its UCUM unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The vital sign (LOINC code and unit).
    pub vital: &'static Vital,
    /// The value in the vital sign's unit.
    pub value: Decimal,
}

impl Measurement {
    /// A measurement of the vital sign with this LOINC code.
    pub fn new(loinc: &str, value: Decimal) -> Result<Self, ReadingError> {
        let vital = vital(loinc).ok_or_else(|| ReadingError::UnknownLoinc(loinc.into()))?;
        Ok(Self { vital, value })
    }
}

/// A sensor reading, the payload of the sensor's COSE_Sign1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Sensor id (the subject CN of the sensor certificate).
    pub sensor_id: String,
    /// Sequence number, strictly increasing per sensor across reboots.
    pub seq: u64,
    /// Measurement time, Unix milliseconds.
    pub measured_at_ms: u64,
    /// The measurements.
    pub measurements: Vec<Measurement>,
}

impl Reading {
    /// Checks the invariants the decoder enforces.
    pub fn validate(&self) -> Result<(), ReadingError> {
        if !valid_device_id(&self.sensor_id) {
            return Err(ReadingError::SensorId);
        }
        let n = self.measurements.len();
        if n == 0 || n > MAX_MEASUREMENTS {
            return Err(ReadingError::MeasurementCount);
        }
        for (i, m) in self.measurements.iter().enumerate() {
            if self.measurements[..i]
                .iter()
                .any(|p| p.vital.loinc == m.vital.loinc)
            {
                return Err(ReadingError::MeasurementCount);
            }
        }
        Ok(())
    }

    /// Deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, ReadingError> {
        self.validate()?;
        let measurements = self
            .measurements
            .iter()
            .map(|m| {
                Value::Array(vec![
                    Value::Text(m.vital.loinc.into()),
                    m.value.to_value(),
                    Value::Text(m.vital.unit.into()),
                ])
            })
            .collect();
        Ok(cbor::encode(&cbor::map(vec![
            (0, cbor::uint(READING_VERSION)),
            (1, Value::Text(self.sensor_id.clone())),
            (2, cbor::uint(self.seq)),
            (3, cbor::uint(self.measured_at_ms)),
            (4, Value::Array(measurements)),
        ])))
    }

    /// Decodes and validates a reading; rejects anything but the deterministic encoding.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ReadingError> {
        let value = cbor::decode_deterministic(bytes, MAX_READING_LEN)?;
        let mut m = MapReader::new(value, &[0, 1, 2, 3, 4])?;
        let version = m.u64(0, "reading version")?;
        if version != READING_VERSION {
            return Err(ReadingError::Version(version));
        }
        let sensor_id = m.text(1, "sensor id")?;
        let seq = m.u64(2, "sequence number")?;
        let measured_at_ms = m.u64(3, "measured-at")?;
        let Value::Array(items) = m.req(4, "measurements")? else {
            return Err(CborError::Structure("measurements must be an array").into());
        };
        if items.is_empty() || items.len() > MAX_MEASUREMENTS {
            return Err(ReadingError::MeasurementCount);
        }
        let mut measurements = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(parts) = item else {
                return Err(CborError::Structure("measurement must be an array").into());
            };
            let [code, value, unit] = <[Value; 3]>::try_from(parts)
                .map_err(|_| CborError::Structure("measurement must have 3 elements"))?;
            let (Value::Text(code), Value::Text(unit)) = (code, unit) else {
                return Err(CborError::Structure("LOINC code and unit must be text").into());
            };
            let meas = Measurement::new(&code, Decimal::from_value(value)?)?;
            if unit != meas.vital.unit {
                return Err(ReadingError::WrongUnit {
                    loinc: meas.vital.loinc,
                    want: meas.vital.unit,
                    got: unit,
                });
            }
            measurements.push(meas);
        }
        let reading = Self {
            sensor_id,
            seq,
            measured_at_ms,
            measurements,
        };
        reading.validate()?;
        Ok(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Reading {
        Reading {
            sensor_id: "SN-0001".into(),
            seq: 42,
            measured_at_ms: 1_767_225_600_000,
            measurements: vec![
                Measurement::new("8867-4", Decimal::new(72, 0)).unwrap(),
                Measurement::new("8310-5", Decimal::new(372, -1)).unwrap(),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let bytes = r.to_cbor().unwrap();
        assert_eq!(Reading::from_cbor(&bytes).unwrap(), r);
    }

    #[test]
    fn decimal_display() {
        assert_eq!(Decimal::new(372, -1).to_string(), "37.2");
        assert_eq!(Decimal::new(-5, -3).to_string(), "-0.005");
        assert_eq!(Decimal::new(12, 2).to_string(), "1200");
        assert!((Decimal::new(985, -1).to_f64() - 98.5).abs() < 1e-9);
    }

    fn encode_with(f: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
        let bytes = sample().to_cbor().unwrap();
        let Value::Map(mut entries) = ciborium::de::from_reader::<Value, _>(&bytes[..]).unwrap()
        else {
            unreachable!()
        };
        f(&mut entries);
        cbor::encode(&Value::Map(entries))
    }

    #[test]
    fn rejections() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                encode_with(|e| e[0].1 = cbor::uint(2)),
                "unsupported reading version 2",
            ),
            (
                encode_with(|e| e[1].1 = Value::Text("bad id!".into())),
                "invalid sensor id",
            ),
            (
                encode_with(|e| e[1].1 = Value::Text("".into())),
                "invalid sensor id",
            ),
            (
                encode_with(|e| e[4].1 = Value::Array(vec![])),
                "a reading needs",
            ),
            (
                encode_with(|e| {
                    e.pop();
                }),
                "unexpected CBOR structure: measurements",
            ),
            (
                encode_with(|e| e.push((cbor::uint(9), cbor::uint(0)))),
                "unexpected CBOR structure: unknown map key",
            ),
            (
                encode_with(|e| {
                    e[4].1 = Value::Array(vec![Value::Array(vec![
                        Value::Text("8310-5".into()),
                        Decimal::new(372, -1).to_value(),
                        Value::Text("[degF]".into()),
                    ])])
                }),
                "LOINC 8310-5 must be in UCUM unit",
            ),
            (
                encode_with(|e| {
                    e[4].1 = Value::Array(vec![Value::Array(vec![
                        Value::Text("1234-5".into()),
                        Decimal::new(1, 0).to_value(),
                        Value::Text("/min".into()),
                    ])])
                }),
                "unsupported LOINC code",
            ),
            (
                encode_with(|e| {
                    let m = Value::Array(vec![
                        Value::Text("8867-4".into()),
                        Decimal::new(70, 0).to_value(),
                        Value::Text("/min".into()),
                    ]);
                    e[4].1 = Value::Array(vec![m.clone(), m]);
                }),
                "a reading needs",
            ),
            (
                encode_with(|e| {
                    e[4].1 = Value::Array(vec![Value::Array(vec![
                        Value::Text("8867-4".into()),
                        Value::Float(70.0),
                        Value::Text("/min".into()),
                    ])])
                }),
                "decimal fraction (tag 4)",
            ),
            (
                encode_with(|e| {
                    e[4].1 = Value::Array(vec![Value::Array(vec![
                        Value::Text("8867-4".into()),
                        Decimal {
                            mantissa: 7,
                            exponent: 0,
                        }
                        .to_value(),
                        Value::Text("/min".into()),
                    ])]);
                    e[2].1 = Value::Integer((-1).into());
                }),
                "sequence number",
            ),
            (vec![0x80], "expected a map"),
        ];
        for (bytes, want) in cases {
            let err = Reading::from_cbor(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
        let mut long = sample().to_cbor().unwrap();
        long.push(0);
        assert!(Reading::from_cbor(&long).is_err());
        assert!(matches!(
            Reading::from_cbor(&vec![0u8; MAX_READING_LEN + 1]),
            Err(ReadingError::Cbor(CborError::TooLong { .. }))
        ));
    }
}
