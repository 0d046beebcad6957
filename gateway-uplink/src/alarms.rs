//! Local alarms: critical values raise an alarm at the gateway itself, whether or not the cloud
//! is reachable. Default limits are the NEWS2 score-3 bands of each single parameter.

use provenance_core::reading::Reading;

/// Critical limits for one vital sign: an alarm when value ≤ low or value ≥ high.
#[derive(Debug, Clone)]
pub struct Limit {
    /// LOINC code.
    pub loinc: &'static str,
    /// Alarm at or below.
    pub low: Option<f64>,
    /// Alarm at or above.
    pub high: Option<f64>,
}

/// NEWS2 score-3 bands: temperature ≤ 35.0 °C; heart rate ≤ 40 or ≥ 131 /min; SpO2 ≤ 91 %;
/// respiratory rate ≤ 8 or ≥ 25 /min; systolic pressure ≤ 90 or ≥ 220 mm[Hg]. (A temperature
/// of ≥ 39.1 °C scores 2 in NEWS2; it is alarmed too.)
pub fn default_limits() -> Vec<Limit> {
    vec![
        Limit {
            loinc: "8310-5",
            low: Some(35.0),
            high: Some(39.1),
        },
        Limit {
            loinc: "8867-4",
            low: Some(40.0),
            high: Some(131.0),
        },
        Limit {
            loinc: "2708-6",
            low: Some(91.0),
            high: None,
        },
        Limit {
            loinc: "9279-1",
            low: Some(8.0),
            high: Some(25.0),
        },
        Limit {
            loinc: "8480-6",
            low: Some(90.0),
            high: Some(220.0),
        },
    ]
}

/// Parses a limit override `LOINC:LOW:HIGH` (either bound may be empty: `2708-6:90:`), and
/// applies it over `limits` (replacing that vital's limits).
pub fn apply_override(limits: &mut Vec<Limit>, spec: &str) -> Result<(), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [loinc, low, high] = parts.as_slice() else {
        return Err(format!(
            "alarm limit {spec:?}: expected LOINC:LOW:HIGH, e.g. 8867-4:45:120"
        ));
    };
    let vital = provenance_core::reading::vital(loinc)
        .ok_or_else(|| format!("alarm limit {spec:?}: unknown LOINC code {loinc}"))?;
    let num = |s: &str| -> Result<Option<f64>, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<f64>()
                .map(Some)
                .map_err(|_| format!("alarm limit {spec:?}: {s:?} is not a number"))
        }
    };
    let (low, high) = (num(low)?, num(high)?);
    if let (Some(l), Some(h)) = (low, high) {
        if l >= h {
            return Err(format!("alarm limit {spec:?}: LOW must be below HIGH"));
        }
    }
    limits.retain(|l| l.loinc != vital.loinc);
    limits.push(Limit {
        loinc: vital.loinc,
        low,
        high,
    });
    Ok(())
}

/// A raised alarm (also one JSON line of the gateway's alarm file).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alarm {
    /// Sensor.
    pub sensor_id: String,
    /// The reading's sequence number.
    pub seq: u64,
    /// When the sensor measured it (ms since the Unix epoch).
    pub measured_at_ms: u64,
    /// LOINC code.
    pub loinc: &'static str,
    /// Vital sign name.
    pub name: &'static str,
    /// The value, in its UCUM unit.
    pub value: f64,
    /// The unit.
    pub unit: &'static str,
    /// The lower critical limit in force (alarm at or below).
    pub low: Option<f64>,
    /// The upper critical limit in force (alarm at or above).
    pub high: Option<f64>,
}

/// The alarms a reading raises.
pub fn check(reading: &Reading, limits: &[Limit]) -> Vec<Alarm> {
    let mut out = Vec::new();
    for m in &reading.measurements {
        let v = m.value.to_f64();
        if let Some(l) = limits.iter().find(|l| l.loinc == m.vital.loinc) {
            if l.low.is_some_and(|lo| v <= lo) || l.high.is_some_and(|hi| v >= hi) {
                out.push(Alarm {
                    sensor_id: reading.sensor_id.clone(),
                    seq: reading.seq,
                    measured_at_ms: reading.measured_at_ms,
                    loinc: m.vital.loinc,
                    name: m.vital.name,
                    value: v,
                    unit: m.vital.unit,
                    low: l.low,
                    high: l.high,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use provenance_core::reading::{Decimal, Measurement};

    fn reading(loinc: &str, v: Decimal) -> Reading {
        Reading {
            sensor_id: "SN-1".into(),
            seq: 1,
            measured_at_ms: 1,
            measurements: vec![Measurement::new(loinc, v).unwrap()],
        }
    }

    #[test]
    fn limits() {
        let l = default_limits();
        assert!(check(&reading("8310-5", Decimal::new(368, -1)), &l).is_empty());
        assert_eq!(
            check(&reading("8310-5", Decimal::new(394, -1)), &l).len(),
            1
        );
        assert_eq!(
            check(&reading("2708-6", Decimal::new(88, 0)), &l)[0].name,
            "oxygen saturation (SpO2)"
        );
        assert!(check(&reading("2708-6", Decimal::new(95, 0)), &l).is_empty());
        assert_eq!(check(&reading("8867-4", Decimal::new(140, 0)), &l).len(), 1);
        assert_eq!(check(&reading("8867-4", Decimal::new(38, 0)), &l).len(), 1);
        // Configured limits replace the defaults for that vital sign.
        let mut l = default_limits();
        apply_override(&mut l, "8867-4:50:110").unwrap();
        assert_eq!(check(&reading("8867-4", Decimal::new(115, 0)), &l).len(), 1);
        assert!(check(&reading("8867-4", Decimal::new(100, 0)), &l).is_empty());
        apply_override(&mut l, "2708-6:94:").unwrap();
        assert_eq!(check(&reading("2708-6", Decimal::new(93, 0)), &l).len(), 1);
        for bad in ["8867-4:50", "9999-9:1:2", "8867-4:x:2", "8867-4:120:50"] {
            assert!(apply_override(&mut l, bad).is_err(), "{bad}");
        }
    }
}
