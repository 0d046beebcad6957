//! What the web app reads, on both engines: the caller (`/v1/me`), the ward overview, a
//! patient's chart series (decimated into buckets, or reading by reading; the alerts of the
//! range; bad ranges refused with problem+json), the log's status, the device registry with
//! each device's history, the export-job list (an archivist sees its own), the chart values of
//! readings logged before the `measurements` table existed (filled in at start), and the web
//! app's files (security headers, ETags, no file outside the app).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_service::{create_token, Role};
use ledger_testkit::{both_engines, now_ms, Devices, Engine, TestApp};
use provenance_core::reading::{Decimal, Measurement};
use serde_json::{json, Value};

const HR: &str = "8867-4";

fn vitals(hr: i64, spo2: i64) -> Vec<Measurement> {
    vec![
        Measurement::new(HR, Decimal::new(hr, 0)).unwrap(),
        Measurement::new("2708-6", Decimal::new(spo2, 0)).unwrap(),
    ]
}

/// One vital sign's series of a `/v1/patients/{p}/series` answer.
fn series_of<'a>(answer: &'a Value, loinc: &str) -> &'a Value {
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["loinc"] == loinc)
        .unwrap_or_else(|| panic!("no {loinc} series in {answer}"))
}

async fn json_of(app: &TestApp, path: &str, token: &str) -> (u16, Value, String) {
    let r = app.get(path, Some(token)).await;
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), ct)
}

/// patient-0: 30 readings 10 s apart from `t0`, heart rate 60 + i, the last 135 (an emergency);
/// patient-1: 5 readings. Returns the indices of patient-0's readings.
async fn ingest_ward(app: &TestApp, dev: &Devices, t0: u64) -> Vec<u64> {
    let mut envs = Vec::new();
    for i in 0..30u64 {
        let hr = if i == 29 { 135 } else { 60 + i as i64 };
        envs.push(dev.envelope_with(0, 0, i + 1, t0 + i * 10_000, vitals(hr, 97)));
    }
    for i in 0..5u64 {
        envs.push(dev.envelope_with(1, 0, i + 1, t0 + i * 10_000, vitals(80, 95)));
    }
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_checkpoint(app.shared.committed()).await;
    body["results"].as_array().unwrap()[..30]
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

async fn ward_and_series(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("ChartOrg", 3, 1);
    dev.enroll(&app).await;
    let clinician = create_token(app.shared.db(), Role::Clinician, "Dr. Chart")
        .await
        .unwrap();
    let t0 = now_ms() - 600_000;
    let idx = ingest_ward(&app, &dev, t0).await;

    let (s, me, _) = json_of(&app, "/v1/me", &clinician).await;
    assert_eq!(s, 200);
    assert_eq!(
        (me["role"].as_str(), me["name"].as_str()),
        (Some("clinician"), Some("Dr. Chart"))
    );

    // The ward: every assigned patient (patient-2 has a sensor but no reading yet).
    let (s, ward, _) = json_of(&app, "/v1/ward", &clinician).await;
    assert_eq!(s, 200, "{ward}");
    let patients = ward["patients"].as_array().unwrap();
    let names: Vec<&str> = patients
        .iter()
        .map(|p| p["patient"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["patient-0", "patient-1", "patient-2"]);
    let p0 = &patients[0];
    let hr = p0["vitals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["loinc"] == HR)
        .unwrap();
    assert_eq!(hr["value"], 135.0);
    assert_eq!(hr["reading_index"], idx[29]);
    assert_eq!(hr["measured_at_ms"], t0 + 290_000);
    assert_eq!(hr["news2_subscore"], 3);
    assert_eq!(p0["alert_level"], "emergency");
    assert_eq!(p0["alerts"][0]["parameter"], HR);
    assert_eq!(
        p0["news2"]["score"],
        Value::Null,
        "two of five vital signs: no aggregate"
    );
    assert_eq!(p0["news2"]["scored"], 2);
    assert_eq!(patients[1]["alert_level"], "none");
    assert_eq!(
        (ward["patients_total"].as_u64(), ward["next_after"].clone()),
        (Some(3), Value::Null)
    );
    // A page at a time, by pseudonym.
    let (_, first, _) = json_of(&app, "/v1/ward?limit=2", &clinician).await;
    let names = |w: &Value| -> Vec<String> {
        w["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["patient"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&first), ["patient-0", "patient-1"]);
    assert_eq!(first["next_after"], "patient-1");
    let (_, second, _) = json_of(&app, "/v1/ward?limit=2&after=patient-1", &clinician).await;
    assert_eq!(names(&second), ["patient-2"]);
    assert_eq!(second["next_after"], Value::Null);
    for bad in ["limit=0", "limit=1001", "limit=x", "page=2"] {
        let (s, p, ct) = json_of(&app, &format!("/v1/ward?{bad}"), &clinician).await;
        assert_eq!(
            (s, ct.as_str()),
            (400, "application/problem+json"),
            "{bad}: {p}"
        );
    }
    assert_eq!(patients[2]["vitals"], json!([]));

    // Reading by reading when the buckets outnumber the readings (up to now: the alert opened
    // when the service logged the reading).
    let q = format!(
        "/v1/patients/patient-0/series?from={t0}&to={}&points=1000",
        now_ms() + 60_000
    );
    let (s, series, _) = json_of(&app, &q, &clinician).await;
    assert_eq!(s, 200, "{series}");
    let hr = series_of(&series, HR);
    assert_eq!(hr["readings"], 30);
    assert_eq!(hr["t"].as_array().unwrap().len(), 30);
    assert_eq!(hr["index"], json!(idx));
    assert_eq!(hr["mean"][0], 60.0);
    assert!(hr["count"].as_array().unwrap().iter().all(|c| c == 1));
    assert_eq!(
        hr["bands"][0],
        json!([40.0, 3]),
        "NEWS2 bands from the lowest"
    );
    let alerts = series["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{series}");
    assert_eq!(alerts[0]["resolved_at_ms"], Value::Null);

    // Decimated: 10 buckets of 30 s, three readings each, mean, min and max.
    let q = format!(
        "/v1/patients/patient-0/series?from={t0}&to={}&points=10",
        t0 + 300_000
    );
    let (_, series, _) = json_of(&app, &q, &clinician).await;
    assert_eq!(series["bucket_ms"], 30_000);
    let hr = series_of(&series, HR);
    assert_eq!(hr["count"], json!([3, 3, 3, 3, 3, 3, 3, 3, 3, 3]));
    assert_eq!(
        (
            hr["min"][0].as_f64(),
            hr["max"][0].as_f64(),
            hr["mean"][0].as_f64()
        ),
        (Some(60.0), Some(62.0), Some(61.0))
    );
    assert_eq!(hr["t"][1], t0 + 30_000);
    assert_eq!(hr["index"][9], idx[29], "a bucket's last reading");
    assert_eq!(hr["max"][9], 135.0);

    // A range with nothing in it, and a patient nobody knows: empty, not an error.
    let q = "/v1/patients/patient-0/series?from=1000&to=2000";
    let (s, empty, _) = json_of(&app, q, &clinician).await;
    assert_eq!((s, empty["series"].clone()), (200, json!([])));
    let (s, _, _) = json_of(
        &app,
        "/v1/patients/nobody/series?from=1000&to=2000",
        &clinician,
    )
    .await;
    assert_eq!(s, 200);

    // Bad input: a clear 400 problem, on every one.
    let day = 24 * 3600 * 1000u64;
    for (q, kind) in [
        ("from=2000&to=1000".to_string(), "invalid-range"),
        ("from=1000&to=1000".to_string(), "invalid-range"),
        (format!("from=0&to={}", 32 * day), "invalid-range"),
        ("from=0&to=1000&points=9".to_string(), "invalid-points"),
        ("from=0&to=1000&points=5001".to_string(), "invalid-points"),
        ("from=0&to=1000&points=many".to_string(), "invalid-query"),
        ("from=-1&to=1000".to_string(), "invalid-query"),
        ("to=1000".to_string(), "invalid-query"),
        ("from=0&to=1000&patient=x".to_string(), "invalid-query"),
    ] {
        let (s, p, ct) = json_of(
            &app,
            &format!("/v1/patients/patient-0/series?{q}"),
            &clinician,
        )
        .await;
        assert_eq!(s, 400, "{q}: {p}");
        assert_eq!(ct, "application/problem+json", "{q}");
        assert!(p["type"].as_str().unwrap().ends_with(kind), "{q}: {p}");
    }
    let long = "p".repeat(129);
    let (s, p, _) = json_of(
        &app,
        &format!("/v1/patients/{long}/series?from=0&to=1000"),
        &clinician,
    )
    .await;
    assert_eq!(s, 400, "{p}");

    // A reading's detail names its path: gateway, patient, logging time and checkpoint.
    let (s, r, _) = json_of(&app, &format!("/v1/readings/{}", idx[29]), &clinician).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["gateway_id"].as_str(), r["patient"].as_str()),
        (Some("GW-0000"), Some("patient-0"))
    );
    assert!(r["logged_at_ms"].as_u64().unwrap() >= t0 + 290_000, "{r}");
    assert!(r["checkpoint"]["size"].as_u64().unwrap() > idx[29], "{r}");

    // The log's status and the registry with each device's history.
    let (s, st, _) = json_of(&app, "/v1/log/status", &clinician).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["size"], app.shared.committed());
    assert!(st["entries_last_minute"].as_u64().unwrap() >= 35, "{st}");
    assert!(st["checkpoint"]["size"].as_u64().unwrap() > 0);
    assert!(st["checkpoint"]["age_ms"].as_u64().unwrap() < 60_000);
    let (s, _, _) = json_of(&app, "/v1/registry/devices", &clinician).await;
    assert_eq!(s, 403, "the registry page is the auditor's and admin's");
    let (s, reg, _) = json_of(&app, "/v1/registry/devices", &app.admin).await;
    assert_eq!(s, 200);
    assert_eq!(reg["issuers"].as_array().unwrap().len(), 2);
    assert_eq!(
        reg["devices"].as_array().unwrap().len(),
        4,
        "three sensors, one gateway"
    );
    let sn0 = reg["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "SN-0000")
        .unwrap();
    let kinds: Vec<&str> = sn0["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["enroll-sensor", "bind", "assign-patient"], "{sn0}");
    assert_eq!(sn0["assignments"][0]["patient"], "patient-0");
    assert_eq!(sn0["keys"].as_array().unwrap().len(), 1);
    app.finish().await;
}
both_engines!(ward_and_series_on, ward_and_series);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archivist_lists_its_own_export_jobs() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let one = create_token(app.shared.db(), Role::Archivist, "archive one")
        .await
        .unwrap();
    let two = create_token(app.shared.db(), Role::Archivist, "archive two")
        .await
        .unwrap();
    for t in [&one, &one, &two] {
        let r = app.get("/v1/fhir/$export", Some(t)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let (s, mine, _) = json_of(&app, "/v1/fhir/export-jobs", &one).await;
    assert_eq!(s, 200, "{mine}");
    let jobs = mine["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["requested_by"] == "archive one"));
    assert!(
        jobs[0]["created_at_ms"].as_u64() >= jobs[1]["created_at_ms"].as_u64(),
        "newest first"
    );
    let (_, all, _) = json_of(&app, "/v1/fhir/export-jobs", &app.admin).await;
    assert_eq!(
        all["jobs"].as_array().unwrap().len(),
        3,
        "an admin sees every job"
    );
    app.finish().await;
}

/// Readings logged before migration 0011 (no chart values) get them at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_values_of_older_readings_are_filled_in_at_start() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let dev = Devices::new("FillOrg", 2, 1);
    dev.enroll(&app).await;
    let t0 = now_ms() - 600_000;
    ingest_ward(&app, &dev, t0).await;
    let url = app.storage.url.clone();
    let stopped = app.stop().await;
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE readings SET v_heart_rate = NULL, v_spo2 = NULL")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM log_meta WHERE key = 'measurements_filled'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let app = stopped.start_again().await;
    let q = format!(
        "/v1/patients/patient-0/series?from={t0}&to={}&points=1000",
        t0 + 300_000
    );
    let (_, series, _) = json_of(&app, &q, &app.admin).await;
    let hr = series_of(&series, HR);
    assert_eq!(hr["readings"], 30, "{series}");
    assert_eq!(hr["mean"][29], 135.0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_files_are_served_with_a_strict_policy() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client.get(app.url("/")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/app/");
    let r = app.get("/app/", None).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    // Every file: no absolute URL to another host in the app's own code.
    for (path, size) in ledger_service::web_asset_sizes() {
        assert!(size > 0, "{path}");
        let r = app.get(&format!("/app/{path}"), None).await;
        assert_eq!(r.status(), 200, "{path}");
        if path.ends_with(".js") && !path.starts_with("vendor/") {
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("https://") && !text.contains("http://"),
                "{path} names another origin"
            );
        }
    }
    let r = app.get("/app/web_verifier.wasm", None).await;
    assert_eq!(r.headers()["content-type"], "application/wasm");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(&r.bytes().await.unwrap()[..4], b"\0asm");
    let r = app
        .client
        .get(app.url("/app/web_verifier.wasm"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    for bad in [
        "/app/nope.js",
        "/app/../Cargo.toml",
        "/app/%2e%2e/Cargo.toml",
        "/app/vendor",
        "/app/.%2Fapp.js",
    ] {
        let r = app.get(bad, None).await;
        assert_eq!(r.status(), 404, "{bad}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    app.finish().await;
}
