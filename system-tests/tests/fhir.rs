//! The FHIR R4 facade (issue #19) on the real service (PostgreSQL when available, real HTTP):
//! the CapabilityStatement; Observation search by every parameter and prefix, paging by `next`
//! links while readings keep arriving (none lost or repeated), `_include`, reads with the
//! contained Provenance and the evidence link; Device, Provenance and Patient; every error an
//! OperationOutcome with its status; every document validated by `fhir.resources`, and a
//! patient's Observations paged by `fhirpy`, a client library written by others.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, TestApp};
use provenance_core::reading::{Decimal, Measurement};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const HR: &str = "8867-4";
const SPO2: &str = "2708-6";
const TEMP: &str = "8310-5";
const PANEL: &str = "85353-1";

fn single(code: &str, v: i64) -> Vec<Measurement> {
    vec![Measurement::new(code, Decimal::new(v, 0)).unwrap()]
}

fn panel(hr: i64) -> Vec<Measurement> {
    vec![
        Measurement::new(HR, Decimal::new(hr, 0)).unwrap(),
        Measurement::new(SPO2, Decimal::new(97, 0)).unwrap(),
    ]
}

/// The documents kept for `fhir.resources`.
struct Kept {
    dir: PathBuf,
    n: usize,
}

impl Kept {
    fn keep(&mut self, doc: &Value) {
        self.n += 1;
        std::fs::write(
            self.dir.join(format!("doc-{}.json", self.n)),
            doc.to_string(),
        )
        .unwrap();
    }
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let r = app.get(path, token).await;
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, ctype, body)
}

/// A search's bundle (200, FHIR JSON), kept for validation.
async fn bundle(app: &TestApp, kept: &mut Kept, path: &str) -> Value {
    let (status, ctype, b) = get(app, path, Some(&app.reader)).await;
    assert_eq!(status, 200, "{path}: {b}");
    assert!(
        ctype.starts_with("application/fhir+json"),
        "{path}: {ctype}"
    );
    assert_eq!(b["resourceType"], "Bundle", "{path}: {b}");
    assert_eq!(b["type"], "searchset");
    kept.keep(&b);
    b
}

/// The log indices of a bundle's matches, in order.
fn matches(b: &Value) -> Vec<u64> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            e["resource"]["id"]
                .as_str()
                .unwrap()
                .strip_prefix("reading-")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn next_link(b: &Value) -> Option<String> {
    b["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string())
}

/// The path of an absolute link of this service.
fn path_of(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&app.base).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_facade_searches_pages_and_explains_every_error() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let dir = std::env::temp_dir().join(format!("fhir-facade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut kept = Kept { dir, n: 0 };

    // patient-0 (sensor 0): 30 readings a minute apart, heart rate alone, SpO2 alone, a panel
    // of both, in turn; patient-1 (sensor 1): 5 temperatures.
    let now = now_ms();
    let t0 = now - 3_600_000;
    let mut envs = Vec::new();
    for i in 0..30u64 {
        let m = match i % 3 {
            0 => single(HR, 70 + i as i64),
            1 => single(SPO2, 95),
            _ => panel(80),
        };
        envs.push(dev.envelope_with(0, 0, i + 1, t0 + i * 60_000, m));
    }
    for i in 0..5u64 {
        envs.push(dev.envelope_with(1, 0, i + 1, t0 + i * 60_000, single(TEMP, 37)));
    }
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    let idx: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let p0: Vec<u64> = idx[..30].to_vec();
    let logged_between = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    // The CapabilityStatement, without a token.
    let (status, ctype, cap) = get(&app, "/fhir/metadata", None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/fhir+json"));
    assert_eq!(cap["resourceType"], "CapabilityStatement");
    assert_eq!(cap["fhirVersion"], "4.0.1");
    kept.keep(&cap);

    // By patient, in date order; subject and an absolute reference say the same.
    let all = bundle(&app, &mut kept, "/fhir/Observation?patient=patient-0").await;
    assert_eq!(matches(&all), p0);
    assert_eq!(all["total"], 30);
    for q in [
        "subject=Patient/patient-0",
        &format!("patient={}/fhir/Patient/patient-0", app.base),
    ] {
        let b = bundle(&app, &mut kept, &format!("/fhir/Observation?{q}")).await;
        assert_eq!(matches(&b), p0, "{q}");
    }
    let desc = bundle(
        &app,
        &mut kept,
        "/fhir/Observation?patient=patient-0&_sort=-date",
    )
    .await;
    assert_eq!(matches(&desc), p0.iter().rev().copied().collect::<Vec<_>>());

    // code: the Observation's own code; component-code; combo-code (either); OR by comma.
    let every = |k: u64| -> Vec<u64> {
        p0.iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % 3 == k)
            .map(|(_, x)| *x)
            .collect()
    };
    for (q, want) in [
        (format!("code={HR}"), every(0)),
        (format!("code=http://loinc.org|{SPO2}"), every(1)),
        (format!("code={PANEL}"), every(2)),
        (format!("component-code={HR}"), every(2)),
        (
            format!("combo-code={HR}"),
            p0.iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != 1)
                .map(|(_, x)| *x)
                .collect(),
        ),
        (
            format!("code={HR},{SPO2}"),
            p0.iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != 2)
                .map(|(_, x)| *x)
                .collect(),
        ),
        ("code=http://snomed.info/sct|364075005".to_string(), vec![]),
        ("code=0000-0".to_string(), vec![]),
    ] {
        let b = bundle(
            &app,
            &mut kept,
            &format!("/fhir/Observation?patient=patient-0&{q}"),
        )
        .await;
        assert_eq!(matches(&b), want, "{q}");
    }

    // date: prefixes against the measured instants (t0 + i min), and whole days.
    let at = |i: u64| provenance_core_iso(t0 + i * 60_000);
    let day = &at(0)[..10];
    for (q, want) in [
        (format!("date=ge{}", at(10)), p0[10..].to_vec()),
        (format!("date=gt{}", at(10)), p0[11..].to_vec()),
        (format!("date=le{}", at(10)), p0[..11].to_vec()),
        (format!("date=lt{}", at(10)), p0[..10].to_vec()),
        (format!("date={}", at(10)), vec![p0[10]]),
        (
            format!("date=ge{}&date=lt{}", at(5), at(8)),
            p0[5..8].to_vec(),
        ),
        (format!("date=sa{}", at(28)), p0[29..].to_vec()),
        (format!("date=eb{}", at(1)), p0[..1].to_vec()),
        (
            format!("date=ge{day}&date=le{day}"),
            (0..30)
                .filter(|i| at(*i)[..10] == *day)
                .map(|i| p0[i as usize])
                .collect(),
        ),
        ("date=lt2000".to_string(), vec![]),
        // Before 1970 no reading is: every one is after it, none before it.
        ("date=ge1960".to_string(), p0.clone()),
        ("date=le1960-05-01".to_string(), vec![]),
        ("date=lt9999".to_string(), p0.clone()),
    ] {
        let b = bundle(
            &app,
            &mut kept,
            &format!("/fhir/Observation?patient=patient-0&{q}"),
        )
        .await;
        assert_eq!(matches(&b), want, "{q}");
    }

    // device: the sensor key's readings; _include brings the Device; _id picks one.
    let kid = dev.sensors[0].1.key_id.to_hex();
    let b = bundle(
        &app,
        &mut kept,
        &format!("/fhir/Observation?device=Device/key-{kid}&_include=Observation:device&_count=5"),
    )
    .await;
    assert_eq!(matches(&b), p0[..5].to_vec());
    let included: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(included.len(), 1, "{b}");
    assert_eq!(included[0]["resource"]["resourceType"], "Device");
    assert_eq!(included[0]["resource"]["id"], format!("key-{kid}"));
    let b = bundle(
        &app,
        &mut kept,
        &format!("/fhir/Observation?_id=reading-{}", p0[3]),
    )
    .await;
    assert_eq!(matches(&b), vec![p0[3]]);

    // _lastUpdated: logged after the first batch — none yet; then a new batch is.
    let lu = format!("_lastUpdated=gt{}", provenance_core_iso(logged_between));
    let b = bundle(
        &app,
        &mut kept,
        &format!("/fhir/Observation?patient=patient-0&{lu}"),
    )
    .await;
    assert_eq!(matches(&b), Vec::<u64>::new());

    // Paging by next links while readings keep arriving: exactly the readings there were at
    // the first page, each once.
    let mut seen = Vec::new();
    let mut path = "/fhir/Observation?patient=patient-0&_count=7&_total=accurate".to_string();
    let mut seq = 100;
    let mut pages = 0;
    loop {
        let b = bundle(&app, &mut kept, &path).await;
        assert_eq!(b["total"], 30, "the total of the search's snapshot");
        seen.extend(matches(&b));
        pages += 1;
        // More readings for patient-0, measured before and after the pages already read.
        let more = vec![
            dev.envelope_with(0, 0, seq, t0 - 60_000, single(HR, 60)),
            dev.envelope_with(0, 0, seq + 1, now, single(HR, 61)),
        ];
        seq += 2;
        let (status, body) = app.ingest(&more).await;
        assert_eq!(status, 200, "{body}");
        match next_link(&b) {
            Some(url) => path = path_of(&app, &url),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, p0, "every reading of the snapshot once, in order");
    // A new search sees the new readings, and _lastUpdated finds exactly them.
    let b = bundle(
        &app,
        &mut kept,
        "/fhir/Observation?patient=patient-0&_count=1000",
    )
    .await;
    assert_eq!(matches(&b).len(), 30 + 2 * pages);
    let b = bundle(
        &app,
        &mut kept,
        &format!("/fhir/Observation?patient=patient-0&{lu}"),
    )
    .await;
    assert_eq!(matches(&b).len(), 2 * pages);
    // _count=0: the total only.
    let b = bundle(
        &app,
        &mut kept,
        "/fhir/Observation?patient=patient-1&_count=0",
    )
    .await;
    assert_eq!((b["total"].as_u64(), matches(&b).len()), (Some(5), 0));
    // _total: by default stated when the first page holds every match; counted when accurate;
    // never when none.
    for (q, want) in [
        ("_count=2", None),
        ("_count=5", Some(5)),
        ("_count=6", Some(5)),
        ("_count=2&_total=accurate", Some(5)),
        ("_count=6&_total=none", None),
        ("_count=2&_total=estimate", None),
    ] {
        let b = bundle(
            &app,
            &mut kept,
            &format!("/fhir/Observation?patient=patient-1&{q}"),
        )
        .await;
        assert_eq!(b["total"].as_u64(), want, "{q}");
    }
    // An unknown _total: ignored and listed (lenient), refused when strict.
    let b = bundle(
        &app,
        &mut kept,
        "/fhir/Observation?patient=patient-1&_total=exact",
    )
    .await;
    assert_eq!(matches(&b).len(), 5);
    assert!(b.to_string().contains("_total=exact"), "{b}");
    let strict = reqwest::Client::new()
        .get(app.url("/fhir/Observation?patient=patient-1&_total=exact"))
        .bearer_auth(&app.reader)
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 400);

    // An Observation read: the vital-signs profile, the patient, the contained Provenance
    // with both COSE signatures, and the evidence bundle a client can fetch.
    let (status, _, obs) = get(
        &app,
        &format!("/fhir/Observation/reading-{}", p0[2]),
        Some(&app.reader),
    )
    .await;
    assert_eq!(status, 200, "{obs}");
    kept.keep(&obs);
    assert_eq!(obs["subject"]["reference"], "Patient/patient-0");
    assert_eq!(obs["code"]["coding"][0]["code"], PANEL);
    let prov = &obs["contained"][0];
    assert_eq!(prov["resourceType"], "Provenance");
    assert_eq!(prov["target"][0]["reference"], "#");
    assert_eq!(prov["signature"].as_array().unwrap().len(), 2);
    assert!(prov["signature"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["sigFormat"] == "application/cose"));
    let evidence = obs["extension"][0]["valueUrl"].as_str().unwrap();
    let r = app.get(&path_of(&app, evidence), Some(&app.reader)).await;
    assert_eq!(r.status(), 200, "{evidence}");

    // Device, Provenance and Patient.
    let (status, _, d) = get(&app, &format!("/fhir/Device/key-{kid}"), Some(&app.reader)).await;
    assert_eq!(status, 200);
    kept.keep(&d);
    let b = bundle(
        &app,
        &mut kept,
        "/fhir/Device?identifier=urn:vitals-ledger:device-id|SN-0000",
    )
    .await;
    assert_eq!(b["total"], 1, "{b}");
    let b = bundle(&app, &mut kept, "/fhir/Device?_count=2").await;
    let mut devices = b["entry"].as_array().unwrap().len();
    let mut link = next_link(&b);
    while let Some(url) = link {
        let b = bundle(&app, &mut kept, &path_of(&app, &url)).await;
        devices += b["entry"].as_array().unwrap().len();
        link = next_link(&b);
    }
    assert_eq!(devices, 3, "two sensors and the gateway, paged");
    let (status, _, pr) = get(
        &app,
        &format!("/fhir/Provenance/reading-{}", p0[0]),
        Some(&app.reader),
    )
    .await;
    assert_eq!(status, 200);
    kept.keep(&pr);
    let b = bundle(
        &app,
        &mut kept,
        &format!("/fhir/Provenance?target=Observation/reading-{}", p0[0]),
    )
    .await;
    assert_eq!(b["total"], 1);
    let (status, _, pat) = get(&app, "/fhir/Patient/patient-1", Some(&app.reader)).await;
    assert_eq!(
        (status, pat["identifier"][0]["value"].as_str()),
        (200, Some("patient-1"))
    );
    kept.keep(&pat);
    let b = bundle(&app, &mut kept, "/fhir/Patient").await;
    assert_eq!(b["total"], 2);

    // Unknown parameters: ignored and reported (lenient, the default), refused when strict.
    let b = bundle(
        &app,
        &mut kept,
        "/fhir/Observation?patient=patient-1&color=red&_sort=weight",
    )
    .await;
    assert_eq!(matches(&b).len(), 5);
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    let text = outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("color") && text.contains("_sort=weight"),
        "{text}"
    );
    let strict = reqwest::Client::new()
        .get(app.url("/fhir/Observation?patient=patient-1&color=red"))
        .bearer_auth(&app.reader)
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 400);
    let o: Value = strict.json().await.unwrap();
    assert_eq!(o["issue"][0]["code"], "not-supported", "{o}");
    kept.keep(&o);

    // Every error an OperationOutcome with its status.
    let reader = Some(app.reader.as_str());
    let cursor_of_other = next_link(
        &bundle(
            &app,
            &mut kept,
            "/fhir/Observation?patient=patient-0&_count=3",
        )
        .await,
    )
    .unwrap();
    let foreign_cursor = cursor_of_other
        .split("_cursor=")
        .nth(1)
        .unwrap()
        .to_string();
    for (path, token, status, code) in [
        (
            "/fhir/Observation?patient=patient-0".to_string(),
            None,
            401,
            "login",
        ),
        (
            "/fhir/Observation?patient=patient-0".to_string(),
            Some("vlt_not-a-token"),
            401,
            "login",
        ),
        (
            "/fhir/Observation?date=ge2026-13-01".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?date=ap2026-12-01".to_string(),
            reader,
            400,
            "not-supported",
        ),
        (
            "/fhir/Observation?code:text=heart".to_string(),
            reader,
            400,
            "not-supported",
        ),
        (
            "/fhir/Observation?_count=1001".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?_count=x".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?patient=Device/x".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?patient=a&patient=b".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?_cursor=bm90LWEtY3Vyc29y".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            format!("/fhir/Observation?patient=patient-1&_cursor={foreign_cursor}"),
            reader,
            400,
            "invalid",
        ),
        (
            "/fhir/Observation?_format=xml".to_string(),
            reader,
            406,
            "not-supported",
        ),
        (
            "/fhir/Observation/reading-99999999".to_string(),
            reader,
            404,
            "not-found",
        ),
        (
            "/fhir/Observation/xyz".to_string(),
            reader,
            404,
            "not-found",
        ),
        (
            format!("/fhir/Observation/reading-{}", idx[0] - 1),
            reader,
            404,
            "not-found",
        ),
        ("/fhir/Device/key-zz".to_string(), reader, 404, "not-found"),
        ("/fhir/Patient/nobody".to_string(), reader, 404, "not-found"),
        ("/fhir/Provenance".to_string(), reader, 400, "not-supported"),
        ("/fhir/Encounter".to_string(), reader, 404, "not-found"),
        (
            "/fhir/Observation?patient=%00".to_string(),
            reader,
            400,
            "invalid",
        ),
        (
            format!(
                "/fhir/Provenance?target={}",
                vec!["Observation/reading-1"; 101].join(",")
            ),
            reader,
            400,
            "invalid",
        ),
    ] {
        let (got, ctype, o) = get(&app, &path, token).await;
        assert_eq!(got, status, "{path}: {o}");
        assert!(
            ctype.starts_with("application/fhir+json"),
            "{path}: {ctype}"
        );
        assert_eq!(o["resourceType"], "OperationOutcome", "{path}: {o}");
        assert_eq!(o["issue"][0]["code"], code, "{path}: {o}");
        assert_eq!(o["issue"][0]["severity"], "error");
        kept.keep(&o);
    }
    let post = reqwest::Client::new()
        .post(app.url("/fhir/Observation"))
        .bearer_auth(&app.reader)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let o: Value = post.json().await.unwrap();
    assert_eq!(o["resourceType"], "OperationOutcome");

    // The access trail names the patient of a FHIR search.
    app.shared.flush_access_trail().await;
    let trail: Value = app
        .get(
            "/v1/access-log?patient=patient-0&limit=1000",
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        trail["records"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .any(|r| r["path"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/fhir/Observation")),
        "{trail}"
    );

    // fhir.resources validates every document; fhirpy pages a patient's Observations.
    if let Some(python) = common::interop_python("the fhir.resources and fhirpy checks") {
        let files: Vec<PathBuf> = (1..=kept.n)
            .map(|i| kept.dir.join(format!("doc-{i}.json")))
            .collect();
        let out = std::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ledger-service/interop/validate_fhir_json.py"
            ))
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fhir.resources: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        let out = std::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ledger-service/interop/fhirpy_pages.py"
            ))
            .args([&app.url("/fhir"), &app.reader, "patient-0", "7"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fhirpy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), 30 + 2 * pages, "{v}");
        assert_eq!(unique.len(), ids.len(), "fhirpy got a reading twice: {v}");
    }
    let _ = std::fs::remove_dir_all(&kept.dir);
    app.finish().await;
}

/// A FHIR instant (UTC, milliseconds), as the facade writes them.
fn provenance_core_iso(ms: u64) -> String {
    ledger_service::fhir::iso8601(ms)
}
