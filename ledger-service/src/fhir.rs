//! FHIR R4 resources for readings: `Observation` (vital-signs profile, LOINC codes, UCUM units),
//! `Device` (a sensor's or gateway's key, by its certificate) and `Provenance` (targets the
//! Observation; agents the sensor and the gateway; `signature` carries the original COSE bytes,
//! so the signatures travel with the archived data).

use provenance_core::cert::DeviceCert;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::KeyId;
use serde_json::{json, Value};

/// RFC 3339 UTC time of Unix milliseconds (civil-from-days, H. Hinnant; no time-zone data).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses a FHIR `instant` (`YYYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)`) into Unix milliseconds.
pub fn parse_instant(s: &str) -> Option<u64> {
    // ASCII only: the slicing below is by byte.
    if !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        let digits = &frac[..n];
        ms = format!("{digits:0<3}")[..3].parse().ok()?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + ms;
    u64::try_from(total).ok()
}

/// The FHIR id of a device key's `Device` resource.
pub fn device_id(kid: &KeyId) -> String {
    format!("key-{}", kid.to_hex())
}

/// The FHIR id of a reading's `Observation` (and `Provenance`).
pub fn reading_id(index: u64) -> String {
    format!("reading-{index}")
}

/// A FHIR R4 Observation (vital-signs profile) for the reading logged at `index`: one
/// measurement as `valueQuantity`, several as components of the vital-signs panel. With the
/// patient pseudonym (as an identifier) and the logging time when known.
pub fn observation(
    index: u64,
    env: &GatewayEnvelope,
    patient: Option<&str>,
    logged_at_ms: Option<u64>,
) -> Value {
    let r = &env.sensor.reading;
    let quantity = |m: &provenance_core::reading::Measurement| {
        json!({
            "value": m.value.to_f64(),
            "unit": m.vital.unit,
            "system": "http://unitsofmeasure.org",
            "code": m.vital.unit,
        })
    };
    let code = |m: &provenance_core::reading::Measurement| json!({ "coding": [{ "system": "http://loinc.org", "code": m.vital.loinc, "display": m.vital.name }] });
    let mut obs = json!({
        "resourceType": "Observation",
        "id": reading_id(index),
        "meta": { "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"] },
        "identifier": [{ "system": "urn:vitals-ledger:log-index", "value": index.to_string() }],
        "status": "final",
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs" }] }],
        "effectiveDateTime": iso8601(r.measured_at_ms),
        "device": { "reference": format!("Device/{}", device_id(&env.sensor.kid)), "display": r.sensor_id },
    });
    let Value::Object(o) = &mut obs else {
        return obs;
    };
    if let Some(p) = patient {
        o.insert(
            "subject".into(),
            json!({ "identifier": { "system": "urn:vitals-ledger:patient-pseudonym", "value": p } }),
        );
    }
    if let Some(t) = logged_at_ms {
        o.insert("issued".into(), json!(iso8601(t)));
    }
    if let [m] = r.measurements.as_slice() {
        o.insert("code".into(), code(m));
        o.insert("valueQuantity".into(), quantity(m));
    } else {
        o.insert("code".into(), json!({ "coding": [{ "system": "http://loinc.org", "code": "85353-1", "display": "Vital signs, weight, height, head circumference, oxygen saturation and BMI panel" }] }));
        o.insert(
            "component".into(),
            Value::Array(
                r.measurements
                    .iter()
                    .map(|m| {
                        let mut c = serde_json::Map::new();
                        c.insert("code".into(), code(m));
                        c.insert("valueQuantity".into(), quantity(m));
                        Value::Object(c)
                    })
                    .collect(),
            ),
        );
    }
    obs
}

/// A FHIR R4 Device for one device key (its certificate).
pub fn device(cert: &DeviceCert) -> Value {
    json!({
        "resourceType": "Device",
        "id": device_id(&cert.key_id),
        "identifier": [
            { "system": "urn:vitals-ledger:device-id", "value": cert.subject_cn },
            { "system": "urn:vitals-ledger:key-id", "value": cert.key_id.to_hex() },
        ],
        "status": "active",
        "deviceName": [{ "name": cert.subject_cn, "type": "user-friendly-name" }],
        "type": { "text": cert.role.as_str() },
        "note": [{ "text": format!(
            "Ed25519 key {} certified from {} to {}",
            cert.key_id.to_hex(),
            iso8601(cert.not_before_ms),
            iso8601(cert.not_after_ms)
        ) }],
    })
}

/// A FHIR R4 Provenance for the reading logged at `index`: who measured (the sensor), who
/// forwarded (the gateway), and both original COSE_Sign1 signatures (`sigFormat
/// application/cose`: the sensor's bytes, and the gateway's envelope that contains them).
pub fn provenance(index: u64, env: &GatewayEnvelope, envelope: &[u8], logged_at_ms: u64) -> Value {
    use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
    let r = &env.sensor.reading;
    let sensor = format!("Device/{}", device_id(&env.sensor.kid));
    let gateway = format!("Device/{}", device_id(&env.kid));
    let sig_type = json!([{ "system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.5", "display": "Verification Signature" }]);
    json!({
        "resourceType": "Provenance",
        "id": reading_id(index),
        "target": [{ "reference": format!("Observation/{}", reading_id(index)) }],
        "occurredDateTime": iso8601(r.measured_at_ms),
        "recorded": iso8601(logged_at_ms),
        "agent": [
            { "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author", "display": "Author" }] },
              "who": { "reference": sensor, "display": r.sensor_id } },
            { "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "custodian", "display": "Custodian" }] },
              "who": { "reference": gateway } },
        ],
        "signature": [
            { "type": sig_type, "when": iso8601(r.measured_at_ms), "who": { "reference": sensor },
              "sigFormat": "application/cose", "data": B64.encode(env.sensor_bytes()) },
            { "type": sig_type, "when": iso8601(env.received_at_ms), "who": { "reference": gateway },
              "sigFormat": "application/cose", "data": B64.encode(envelope) },
        ],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::iso8601(1_767_229_205_123),
            "2026-01-01T01:00:05.123Z"
        );
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn instants_round_trip_and_bad_ones_are_refused() {
        for ms in [0, 951_782_400_000, 1_767_229_205_123, 1_795_000_000_001] {
            assert_eq!(super::parse_instant(&super::iso8601(ms)), Some(ms));
        }
        assert_eq!(
            super::parse_instant("2026-01-01T02:00:05.123+01:00"),
            Some(1_767_229_205_123)
        );
        assert_eq!(
            super::parse_instant("2026-01-01T01:00:05Z"),
            Some(1_767_229_205_000)
        );
        assert_eq!(
            super::parse_instant("2026-01-01T01:00:05.1Z"),
            Some(1_767_229_205_100)
        );
        for bad in [
            "",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "x026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+0100",
        ] {
            assert_eq!(super::parse_instant(bad), None, "{bad}");
        }
    }
}
