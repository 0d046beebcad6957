//! The access trail of patient data over real HTTP on both engines: every request of an
//! identified caller to readings, evidence, alerts and log entries is recorded — who, what,
//! when, from where, the status (refusals too) — in order; other routes and unidentified
//! requests are not; admins page and filter it (and that reading is itself recorded); only
//! admins may; the CLI exports it as NDJSON.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_service::{create_token, Role};
use ledger_testkit::{both_engines, now_ms, Devices, Engine, TestApp};
use serde_json::Value;

async fn trail(app: &TestApp, query: &str) -> Vec<Value> {
    app.shared.flush_access_trail().await;
    let r = app
        .get(&format!("/v1/access-log{query}"), Some(&app.admin))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["records"].as_array().unwrap().clone()
}

both_engines!(recorded, every_read_of_patient_data_is_recorded);

async fn every_read_of_patient_data_is_recorded(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let (status, body) = app
        .ingest(&[dev.envelope(0, 0, 1, now_ms() - 1000, 70)])
        .await;
    assert_eq!(status, 200, "{body}");
    let idx = body["results"][0]["index"].as_u64().unwrap();
    // Evidence needs a checkpoint that covers the reading.
    app.wait_for_checkpoint(idx + 1).await;
    let doctor = create_token(app.shared.db(), Role::Clinician, "dr-grey")
        .await
        .unwrap();
    let before = now_ms();
    // Reads by a clinician and an auditor, a refusal, and requests that are not recorded.
    let reads = [
        (doctor.as_str(), format!("/v1/readings/{idx}"), 200),
        (
            doctor.as_str(),
            "/v1/readings?patient=patient-0".to_string(),
            200,
        ),
        (doctor.as_str(), format!("/v1/readings/{idx}/evidence"), 200),
        (
            doctor.as_str(),
            "/v1/alerts?patient=patient-0".to_string(),
            200,
        ),
        (app.reader.as_str(), format!("/v1/log/entries/{idx}"), 200),
        (
            app.gateway.as_str(),
            "/v1/readings?patient=patient-0".to_string(),
            403,
        ),
    ];
    for (token, path, want) in &reads {
        assert_eq!(app.get(path, Some(token)).await.status(), *want, "{path}");
    }
    assert_eq!(app.get("/v1/readings/0", None).await.status(), 401);
    assert_eq!(
        app.get("/v1/readings/0", Some("vlt_nope")).await.status(),
        401
    );
    assert_eq!(
        app.get("/v1/log/checkpoint", Some(&doctor)).await.status(),
        200
    );
    let records = trail(&app, &format!("?from={before}")).await;
    assert_eq!(records.len(), reads.len(), "{records:#?}");
    for (r, (_, path, want)) in records.iter().zip(&reads) {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        assert_eq!(r["path"], p);
        assert_eq!(r["query"], q);
        assert_eq!(r["method"], "GET");
        assert_eq!(r["status"], *want);
        assert_eq!(r["remote"], "127.0.0.1");
        assert!(r["at"].as_u64().unwrap() >= before);
        assert!(r["token_id"].as_str().unwrap().starts_with("tok_"));
    }
    assert_eq!(records[0]["token_name"], "dr-grey");
    assert_eq!(records[0]["role"], "clinician");
    assert_eq!(records[1]["patient"], "patient-0");
    assert!(records[0]["patient"].is_null());
    assert_eq!(records[4]["role"], "auditor");
    assert_eq!(records[5]["role"], "gateway");
    // Filters: by patient, by token; reading the trail is recorded too.
    let by_patient = trail(&app, &format!("?from={before}&patient=patient-0")).await;
    assert_eq!(by_patient.len(), 3);
    let doctor_id = records[0]["token_id"].as_str().unwrap().to_string();
    let by_token = trail(&app, &format!("?from={before}&token={doctor_id}")).await;
    assert_eq!(by_token.len(), 4);
    let again = trail(&app, &format!("?from={before}")).await;
    assert!(again.len() > records.len());
    assert!(again
        .iter()
        .any(|r| r["path"] == "/v1/access-log" && r["role"] == "admin"));
    // Paging with a cursor sees each record once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let v: Value = app
            .get(
                &format!("/v1/access-log?from={before}&limit=2{cursor}"),
                Some(&app.admin),
            )
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].clone()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(seen, unique);
    assert!(seen.len() >= again.len());
    // A hostile parameter (a NUL, refused as 400) is recorded escaped, and the trail goes on.
    let t = ledger_testkit::now_ms();
    assert_eq!(
        app.get("/v1/readings?patient=a%00b%0D%0A", Some(&doctor))
            .await
            .status(),
        400
    );
    assert_eq!(app.get("/v1/alerts", Some(&doctor)).await.status(), 200);
    let last = trail(&app, &format!("?from={t}&token={doctor_id}")).await;
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!(last[0]["status"], 400);
    assert_eq!(last[0]["patient"], "a\\u{0}b\\r\\n");
    // Only admins read it; bad parameters are 400.
    assert_eq!(app.get("/v1/access-log", Some(&doctor)).await.status(), 403);
    assert_eq!(
        app.get("/v1/access-log", Some(&app.reader)).await.status(),
        403
    );
    assert_eq!(app.get("/v1/access-log", None).await.status(), 401);
    for q in ["?cursor=zzz", "?limit=x", "?patient=", "?color=blue"] {
        let r = app
            .get(&format!("/v1/access-log{q}"), Some(&app.admin))
            .await;
        assert_eq!(r.status(), 400, "{q}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_the_trail_as_ndjson() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/alerts", Some(&app.reader)).await.status(), 200);
    }
    app.shared.flush_access_trail().await;
    let out = std::env::temp_dir().join(format!("access-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-service"))
        .env("DATABASE_URL", &app.storage.url)
        .env("RUST_LOG", "warn")
        .args(["export-access-log", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|r| r["path"] == "/v1/alerts" && r["role"] == "auditor"));
    // It refuses to overwrite.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-service"))
        .env("DATABASE_URL", &app.storage.url)
        .args(["export-access-log", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let _ = std::fs::remove_file(&out);
    app.finish().await;
}
