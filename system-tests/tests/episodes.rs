//! The simulator's episodes are clinically unambiguous: every reading of a fever, tachycardia or
//! desaturation episode — at every point of the 30-minute wave, so whatever the minute the
//! simulator starts — trips the gateway's default alarm limit and scores in NEWS2 enough to open
//! an alert (fever 2, the others 3), while the patient's other vital signs stay normal; and the
//! real service, fed one reading a minute over a whole wave, opens the alert at the first and
//! keeps it open through the last.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use gateway_uplink::alarms;
use ledger_testkit::{now_ms, Devices, Engine, TestApp};
use provenance_core::reading::Reading;
use rand::SeedableRng;
use sensor_fw::physiology::{Episode, Physiology};
use serde_json::Value;

/// (episode, the vital it moves, the least NEWS2 sub-score it must reach).
const EPISODES: [(Episode, &str, u8); 3] = [
    (Episode::Fever, "8310-5", 2),
    (Episode::Tachycardia, "8867-4", 3),
    (Episode::Desaturation, "2708-6", 3),
];

const MINUTE: u64 = 60_000;

fn reading(body: &Physiology, t: u64, rng: &mut rand::rngs::StdRng) -> Reading {
    Reading {
        sensor_id: "SN-0001".into(),
        seq: 1,
        measured_at_ms: t,
        measurements: body.sample(t, rng).unwrap().to_vec(),
    }
}

#[test]
fn every_reading_of_an_episode_alarms_at_the_gateway_and_scores_in_news2() {
    let limits = alarms::default_limits();
    for (episode, loinc, least) in EPISODES {
        let body = Physiology {
            episode: Some(episode),
        };
        for seed in 0..4u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // One sample a second over a whole wave, from a different start each seed.
            let start = 1_780_000_000_000 + seed * 7 * MINUTE + seed * 1_234;
            for s in 0..1800 {
                let t = start + s * 1000;
                let r = reading(&body, t, &mut rng);
                let raised: Vec<&str> =
                    alarms::check(&r, &limits).iter().map(|a| a.loinc).collect();
                assert_eq!(raised, [loinc], "{episode:?} at {t}: alarms {raised:?}");
                for m in &r.measurements {
                    let v = m.value.to_f64();
                    let score = ledger_service::news2_subscore(m.vital.loinc, v).unwrap();
                    if m.vital.loinc == loinc {
                        assert!(
                            score >= least,
                            "{episode:?} at {t}: {loinc} {v} scores {score}"
                        );
                    } else {
                        assert_eq!(
                            score, 0,
                            "{episode:?} at {t}: {} {v} is not normal",
                            m.vital.loinc
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_keeps_each_episode_alert_open_over_a_whole_wave() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", EPISODES.len(), 1);
    dev.enroll(&app).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // One reading a minute over the last 30 minutes (a whole wave), each sensor its episode.
    let first = now_ms() - 31 * MINUTE;
    for (s, (episode, loinc, least)) in EPISODES.into_iter().enumerate() {
        let body = Physiology {
            episode: Some(episode),
        };
        let patient = format!("patient-{s}");
        for k in 0..=30u64 {
            let t = first + k * MINUTE;
            let m = body.sample(t, &mut rng).unwrap().to_vec();
            let (status, out) = app.ingest(&[dev.envelope_with(s, 0, k + 1, t, m)]).await;
            assert_eq!((status, out["accepted"].as_u64()), (200, Some(1)), "{out}");
            let v: Value = app
                .get(&format!("/v1/alerts?patient={patient}"), Some(&app.reader))
                .await
                .json()
                .await
                .unwrap();
            let alerts = v["alerts"].as_array().unwrap();
            let a = alerts
                .iter()
                .find(|a| a["parameter"] == loinc)
                .unwrap_or_else(|| panic!("{episode:?}, minute {k}: no alert: {v}"));
            assert_eq!(a["state"], "open", "{episode:?}, minute {k}: {a}");
            assert!(a["severity"].as_u64().unwrap() >= u64::from(least), "{a}");
        }
        // Opened once, never resolved or re-opened along the wave.
        let v: Value = app
            .get(&format!("/v1/alerts?patient={patient}"), Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        let id = v["alerts"][0]["id"].as_str().unwrap();
        let one: Value = app
            .get(&format!("/v1/alerts/{id}"), Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        let transitions: Vec<&str> = one["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["transition"].as_str().unwrap())
            .collect();
        assert_eq!(transitions, ["opened"], "{episode:?}: {one}");
    }
    app.finish().await;
}
