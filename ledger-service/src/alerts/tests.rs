//! The alert rules and lifecycle.

use super::*;

const HR: &str = "8867-4";
const MIN: u64 = 60_000;

fn engine() -> Engine {
    Engine::new(
        AlertConfig {
            normal_period_ms: 10 * MIN,
            news2_window_ms: 15 * MIN,
        },
        vec![],
        vec![],
    )
}

fn kinds(c: &[Change]) -> Vec<Option<Transition>> {
    c.iter()
        .map(|c| c.transition.as_ref().map(|t| t.0))
        .collect()
}

#[test]
fn chart_bands_agree_with_the_subscores() {
    for loinc in NEWS2_PARAMS {
        let bands = news2_bands(loinc).unwrap();
        // Every tenth of a unit from 0 to 250: the band a value falls in scores it.
        for tenth in 0..2500 {
            let v = f64::from(tenth) / 10.0 + 0.05;
            let band = bands
                .iter()
                .find(|(hi, _)| hi.is_none_or(|h| v <= h))
                .unwrap();
            assert_eq!(Some(band.1), news2_subscore(loinc, v), "{loinc} {v}");
        }
        for (hi, score) in bands.iter().filter(|(h, _)| h.is_some_and(|h| h != 220.0)) {
            assert_eq!(
                news2_subscore(loinc, hi.unwrap()),
                Some(*score),
                "{loinc} at {hi:?}"
            );
        }
    }
    assert!(news2_bands("8462-4").is_none());
}

#[test]
fn the_aggregate_needs_all_five_within_the_window() {
    let normal = |p: &str| match p {
        "9279-1" => Some((16.0, 1000)),
        "2708-6" => Some((97.0, 1000)),
        "8480-6" => Some((120.0, 1000)),
        "8867-4" => Some((70.0, 1000)),
        "8310-5" => Some((37.0, 1000)),
        _ => None,
    };
    assert_eq!(news2_aggregate(normal, 1000, 10), Some(0));
    assert_eq!(news2_aggregate(normal, 1010, 10), Some(0));
    assert_eq!(news2_aggregate(normal, 1011, 10), None, "too old");
    let missing = |p: &str| (p != "8310-5").then(|| normal(p)).flatten();
    assert_eq!(news2_aggregate(missing, 1000, 10), None);
    let sick = |p: &str| {
        if p == "8867-4" {
            Some((135.0, 1000))
        } else {
            normal(p)
        }
    };
    assert_eq!(news2_aggregate(sick, 1000, 10), Some(3));
    assert_eq!(
        (news2_severity(4), news2_severity(5), news2_severity(7)),
        (0, 2, 3)
    );
}

#[test]
fn subscores_follow_news2() {
    for (loinc, v, s) in [
        ("9279-1", 8.0, 3),
        ("9279-1", 9.0, 1),
        ("9279-1", 16.0, 0),
        ("9279-1", 22.0, 2),
        ("9279-1", 25.0, 3),
        ("2708-6", 91.0, 3),
        ("2708-6", 93.0, 2),
        ("2708-6", 95.0, 1),
        ("2708-6", 96.0, 0),
        ("8480-6", 90.0, 3),
        ("8480-6", 100.0, 2),
        ("8480-6", 110.0, 1),
        ("8480-6", 219.0, 0),
        ("8480-6", 220.0, 3),
        ("8867-4", 40.0, 3),
        ("8867-4", 50.0, 1),
        ("8867-4", 90.0, 0),
        ("8867-4", 110.0, 1),
        ("8867-4", 130.0, 2),
        ("8867-4", 131.0, 3),
        ("8310-5", 35.0, 3),
        ("8310-5", 36.0, 1),
        ("8310-5", 38.0, 0),
        ("8310-5", 39.0, 1),
        ("8310-5", 39.1, 2),
    ] {
        assert_eq!(news2_subscore(loinc, v), Some(s), "{loinc} {v}");
    }
    assert_eq!(news2_subscore("0000-0", 1.0), None);
}

#[test]
fn lifecycle_open_escalate_acknowledge_resolve() {
    let mut e = engine();
    let t = 1_000 * MIN;
    assert!(e.on_reading("p1", 1, t, &[(HR, 80.0)], t).is_empty());
    let c = e.on_reading("p1", 2, t + 1, &[(HR, 120.0)], t + 1);
    assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
    assert_eq!(c[0].alert.severity, 2);
    let id = c[0].alert.id.clone();
    // Still abnormal, not worse: the row is updated, no transition.
    let c = e.on_reading("p1", 3, t + 2, &[(HR, 118.0)], t + 2);
    assert_eq!(kinds(&c), vec![None]);
    assert_eq!(c[0].alert.reading_index, 3);
    let ack = e.acknowledge(&id, "dr-a", t + 3).unwrap();
    assert_eq!(ack.alert.status, Status::Acknowledged);
    assert_eq!(
        e.acknowledge(&id, "dr-a", t + 3),
        Err(ActionError::AlreadyAcknowledged(id.clone()))
    );
    // Worse: escalated, open again, same alert.
    let c = e.on_reading("p1", 4, t + 4, &[(HR, 140.0)], t + 4);
    assert_eq!(kinds(&c), vec![Some(Transition::Escalated)]);
    assert_eq!(
        (
            c[0].alert.id.as_str(),
            c[0].alert.severity,
            c[0].alert.status
        ),
        (id.as_str(), 3, Status::Open)
    );
    // Normal again: resolved only once the normal period has passed.
    assert!(e
        .on_reading("p1", 5, t + 5 * MIN, &[(HR, 75.0)], t + 5 * MIN)
        .is_empty());
    let c = e.on_reading("p1", 6, t + 4 + 10 * MIN, &[(HR, 75.0)], t + 11 * MIN);
    assert_eq!(kinds(&c), vec![Some(Transition::Resolved)]);
    assert_eq!(
        c[0].alert.events, 4,
        "opened, acknowledged, escalated, resolved"
    );
    assert_eq!(
        e.resolve(&id, "dr-a", t),
        Err(ActionError::NotFound(id.clone()))
    );
    // A new episode is a new alert.
    let c = e.on_reading("p1", 7, t + 20 * MIN, &[(HR, 150.0)], t + 20 * MIN);
    assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
    assert_ne!(c[0].alert.id, id);
    let r = e.resolve(&c[0].alert.id, "dr-b", t + 21 * MIN).unwrap();
    assert_eq!(r.transition, Some((Transition::Resolved, "dr-b".into())));
}

#[test]
fn rollback_undoes_exactly_the_batch() {
    let mut e = engine();
    let t = 100 * MIN;
    let kept = e.on_reading("p1", 1, t, &[(HR, 150.0)], t);
    // The whole state, in a stable order.
    let snapshot = |e: &Engine| {
        let mut v: Vec<String> = Vec::new();
        for (p, m) in &e.unresolved {
            for (k, a) in m {
                v.push(format!("alert {p} {k} {a:?}"));
            }
        }
        for (p, m) in &e.limits {
            for (k, l) in m {
                v.push(format!("limit {p} {k} {l:?}"));
            }
        }
        for (p, m) in &e.latest {
            for (k, x) in m {
                v.push(format!("latest {p} {k} {x:?}"));
            }
        }
        v.sort();
        v
    };
    let before = snapshot(&e);
    assert!(before.len() >= 2, "an alert and a latest value");
    e.begin();
    e.on_reading("p1", 2, t + 1, &[(HR, 80.0), ("8310-5", 39.5)], t + 1); // new fever alert
    e.on_reading("p2", 3, t + 1, &[(HR, 35.0)], t + 1);
    e.set_limit(
        "p1",
        HR,
        Some(Limit {
            low: Some(1.0),
            high: Some(2.0),
        }),
    );
    e.acknowledge(&kept[0].alert.id, "dr", t + 2).unwrap();
    e.rollback();
    assert_eq!(snapshot(&e), before);
    // And a committed batch stays.
    e.begin();
    e.resolve(&kept[0].alert.id, "dr", t + 3).unwrap();
    e.commit();
    e.rollback(); // nothing to undo
    assert!(e.unresolved.is_empty());
}

#[test]
fn patient_limits_replace_news2_bands() {
    let mut e = engine();
    e.set_limit(
        "p1",
        HR,
        Some(Limit {
            low: Some(50.0),
            high: Some(100.0),
        }),
    );
    let c = e.on_reading("p1", 1, 1, &[(HR, 105.0)], 1);
    assert_eq!(c[0].alert.severity, 3, "outside the patient's own limits");
    assert!(
        e.on_reading("p2", 2, 1, &[(HR, 105.0)], 1).is_empty(),
        "NEWS2 1 for others"
    );
    e.set_limit("p1", HR, None);
    assert!(e.on_reading("p3", 3, 1, &[(HR, 125.0)], 1).len() == 1);
}

#[test]
fn aggregate_news2_needs_all_five_recent() {
    let mut e = engine();
    let t = 100 * MIN;
    // Each sub-score 1 (total 5) is no single-parameter alert, but the aggregate is urgent.
    let mild = [
        ("8310-5", 38.5),
        ("8867-4", 100.0),
        ("2708-6", 95.0),
        ("9279-1", 10.0),
    ];
    assert!(
        e.on_reading("p1", 1, t, &mild, t).is_empty(),
        "blood pressure missing"
    );
    let c = e.on_reading("p1", 2, t + 1, &[("8480-6", 105.0)], t + 1);
    assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
    assert_eq!(
        (
            c[0].alert.parameter.as_str(),
            c[0].alert.value,
            c[0].alert.severity
        ),
        (NEWS2, 5.0, 2)
    );
    // Too old to combine: no aggregate.
    let mut e = engine();
    e.on_reading("p1", 1, t, &mild, t);
    assert!(e
        .on_reading("p1", 2, t + 16 * MIN, &[("8480-6", 105.0)], t)
        .is_empty());
}

#[test]
fn payload_names_only_the_pseudonym_and_the_evidence() {
    let mut e = engine();
    let c = e.on_reading(
        "patient-7",
        42,
        1_795_000_000_000,
        &[(HR, 150.0)],
        1_795_000_000_123,
    );
    let (ty, body) = payload(&c[0].alert, Transition::Opened, 1_795_000_000_123, |p| {
        format!("https://ledger.example{p}")
    });
    assert_eq!(ty, "alert.opened");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "alert.opened");
    assert_eq!(v["timestamp"], "2026-11-18T11:06:40.123Z");
    assert_eq!(v["data"]["patient"], "patient-7");
    assert_eq!(
        v["data"]["evidence"],
        "https://ledger.example/v1/readings/42/evidence"
    );
    assert_eq!(v["data"]["unit"], "/min");
}
