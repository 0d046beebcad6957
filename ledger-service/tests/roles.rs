//! The role matrix of docs/SECURITY.md, endpoint by endpoint: every route is called with a
//! token of every role and with none. A role the matrix allows gets past the check (whatever
//! the answer then: 2xx, 400, 404, 409, 422); every other role gets 403 — before its path,
//! query or body is looked at (the bodies here are empty objects, which no route accepts); no
//! token gets 401. Public routes answer without a token.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_service::{create_household_token, create_token, Role};
use ledger_testkit::{Engine, TestApp};
use std::collections::HashMap;

const A: Role = Role::Admin;
const C: Role = Role::Clinician;
const R: Role = Role::Archivist;
const U: Role = Role::Auditor;
const G: Role = Role::Gateway;
const M: Role = Role::Monitor;
const H: Role = Role::Household;

/// (method, path, the roles allowed). Ids in paths need not exist.
const MATRIX: &[(&str, &str, &[Role])] = &[
    ("POST", "/v1/ingest", &[G]),
    ("POST", "/v1/registry/issuers", &[A]),
    ("POST", "/v1/registry/sensors", &[A]),
    ("POST", "/v1/registry/gateways", &[A]),
    ("POST", "/v1/registry/bindings", &[A]),
    ("POST", "/v1/registry/assignments", &[A]),
    ("POST", "/v1/registry/rotations", &[A]),
    ("POST", "/v1/registry/revocations", &[A]),
    ("GET", "/v1/registry/gateways/GW-0000/events", &[A, G]),
    ("GET", "/v1/log/entries/0", &[A, C, R, U]),
    ("GET", "/v1/readings?patient=p", &[A, C, R, U]),
    ("GET", "/v1/readings/0", &[A, C, R, U]),
    ("GET", "/v1/readings/0/evidence", &[A, C, R, U]),
    // The FHIR facade: the readers of the readings API.
    ("GET", "/fhir/Observation?patient=p", &[A, C, R, U]),
    ("GET", "/fhir/Observation/reading-0", &[A, C, R, U]),
    ("GET", "/fhir/Device", &[A, C, R, U]),
    ("GET", "/fhir/Device/key-00", &[A, C, R, U]),
    (
        "GET",
        "/fhir/Provenance?target=Observation/reading-0",
        &[A, C, R, U],
    ),
    ("GET", "/fhir/Provenance/reading-0", &[A, C, R, U]),
    ("GET", "/fhir/Patient", &[A, C, R, U]),
    ("GET", "/fhir/Patient/p", &[A, C, R, U]),
    ("GET", "/v1/alerts", &[A, C, U]),
    (
        "GET",
        "/v1/alerts/alrt_000000000000000000000000",
        &[A, C, U],
    ),
    (
        "POST",
        "/v1/alerts/alrt_000000000000000000000000/acknowledge",
        &[A, C],
    ),
    (
        "POST",
        "/v1/alerts/alrt_000000000000000000000000/resolve",
        &[A, C],
    ),
    ("GET", "/v1/patients/p/alert-limits", &[A, C, U]),
    ("PUT", "/v1/patients/p/alert-limits", &[A, C]),
    ("GET", "/v1/fhir/$export?_type=Nothing", &[A, R]),
    (
        "GET",
        "/v1/fhir/export-jobs/exp_000000000000000000000000",
        &[A, R],
    ),
    (
        "DELETE",
        "/v1/fhir/export-jobs/exp_000000000000000000000000",
        &[A, R],
    ),
    (
        "GET",
        "/v1/fhir/export-jobs/exp_000000000000000000000000/files/Observation.ndjson",
        &[A, R],
    ),
    (
        "POST",
        "/v1/fhir/export-jobs/exp_000000000000000000000000/acknowledge",
        &[A, R],
    ),
    (
        "POST",
        "/v1/fhir/export-jobs/exp_000000000000000000000000/approve-pruning",
        &[A],
    ),
    ("POST", "/v1/webhooks/endpoints", &[A]),
    ("GET", "/v1/webhooks/endpoints", &[A]),
    ("POST", "/v1/webhooks/endpoints/ep_0/rotate-secret", &[A]),
    ("POST", "/v1/webhooks/endpoints/ep_0/disable", &[A]),
    ("POST", "/v1/webhooks/endpoints/ep_0/enable", &[A]),
    ("GET", "/v1/webhooks/messages", &[A]),
    ("GET", "/v1/webhooks/messages/msg_0/attempts", &[A]),
    ("POST", "/v1/webhooks/messages/msg_0/replay", &[A]),
    ("POST", "/v1/tokens", &[A]),
    ("GET", "/v1/tokens", &[A]),
    ("GET", "/v1/tokens/tok_0000000000000000", &[A]),
    ("POST", "/v1/tokens/tok_0000000000000000/revoke", &[A]),
    ("POST", "/v1/tokens/tok_0000000000000000/rotate", &[A]),
    ("GET", "/v1/access-log", &[A]),
    ("GET", "/v1/security-alerts", &[A, U]),
    ("GET", "/metrics", &[A, M]),
    ("GET", "/v1/me", &[A, C, R, U, G, M, H]),
    ("POST", "/v1/registry/recipients", &[A]),
    ("POST", "/v1/registry/household-bindings", &[A]),
    // The matrix's household token is HH-0000's.
    ("GET", "/v1/households/HH-0000/feed", &[A, U, H]),
    ("GET", "/v1/ward", &[A, C, U]),
    ("GET", "/v1/patients/p/series?from=0&to=1000", &[A, C, U]),
    ("GET", "/v1/log/status", &[A, C, R, U]),
    ("GET", "/v1/registry/devices", &[A, U]),
    ("GET", "/v1/fhir/export-jobs", &[A, R]),
];

/// Routes anyone may call.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/docs/",
    "/fhir/metadata",
    "/v1/log/checkpoint",
    "/v1/log/key",
    "/v1/log/proof/consistency?from=0&to=0",
    "/",
    "/app/",
    "/app/app.js",
    "/app/web_verifier.wasm",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_enforces_the_role_matrix() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let mut tokens = HashMap::new();
    for role in Role::ALL {
        let name = format!("matrix {}", role.as_str());
        let token = if role == Role::Household {
            create_household_token(app.shared.db(), "HH-0000", &name)
                .await
                .unwrap()
        } else {
            create_token(app.shared.db(), role, &name).await.unwrap()
        };
        tokens.insert(role.as_str(), token);
    }
    let mut wrong = Vec::new();
    for (method, path, allowed) in MATRIX {
        let send = |token: Option<&str>| {
            let mut req = app.client.request(method.parse().unwrap(), app.url(path));
            if *method != "GET" {
                req = req.header("content-type", "application/json").body("{}");
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            async move { req.send().await.unwrap() }
        };
        let r = send(None).await;
        if r.status() != 401 {
            wrong.push(format!("{method} {path} without a token: {}", r.status()));
        }
        // Under /fhir every error is an OperationOutcome.
        let want = if path.starts_with("/fhir/") {
            "application/fhir+json; charset=utf-8"
        } else {
            "application/problem+json"
        };
        assert_eq!(r.headers()["content-type"], want, "{path}");
        for role in Role::ALL {
            let status = send(Some(&tokens[role.as_str()])).await.status().as_u16();
            let ok = if allowed.contains(&role) {
                status != 401 && status != 403
            } else {
                status == 403
            };
            if !ok {
                wrong.push(format!(
                    "{method} {path} as {}: {status} (allowed: {:?})",
                    role.as_str(),
                    allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>()
                ));
            }
        }
    }
    for path in PUBLIC {
        let status = app.get(path, None).await.status().as_u16();
        if status == 401 || status == 403 {
            wrong.push(format!("GET {path} without a token: {status}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the role matrix is not what the service enforces:\n{}",
        wrong.join("\n")
    );
    // Every route of the OpenAPI document is in the matrix or public.
    let doc: serde_json::Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let known: Vec<String> = MATRIX
        .iter()
        .map(|(_, p, _)| p.split('?').next().unwrap().to_string())
        .chain(
            PUBLIC
                .iter()
                .map(|p| p.split('?').next().unwrap().to_string()),
        )
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let secured = item
            .as_object()
            .unwrap()
            .values()
            .any(|op| op.get("security").is_some());
        if !secured {
            continue;
        }
        let shape = regex_free_shape(path);
        assert!(
            known.iter().any(|k| regex_free_shape(k) == shape),
            "{path} is not in the role matrix"
        );
    }
    app.finish().await;
}

/// A path with every parameter or id segment replaced by `*`, to compare routes and examples.
fn regex_free_shape(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let id = seg.starts_with('{')
                || seg.contains('_') && seg.chars().any(|c| c.is_ascii_digit())
                || seg == "0"
                || seg == "p"
                || seg == "GW-0000"
                || seg == "HH-0000"
                || seg == "Observation.ndjson"
                || seg.starts_with("reading-")
                || seg.starts_with("key-");
            if id {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
