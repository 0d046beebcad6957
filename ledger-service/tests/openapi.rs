//! The committed OpenAPI document (`openapi/ledger-service.json`) must be what the code
//! generates. Regenerate after an API change with:
//!
//! ```sh
//! UPDATE_OPENAPI=1 cargo test -p ledger-service --test openapi
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::Path;

#[test]
fn committed_openapi_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/ledger-service.json");
    let generated = ledger_service::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/ledger-service.json is stale: run `UPDATE_OPENAPI=1 cargo test -p ledger-service --test openapi` and commit it"
    );
}

#[test]
fn document_is_openapi_3_1_and_lists_the_log_api() {
    let doc: serde_json::Value = serde_json::from_str(&ledger_service::openapi_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/ingest",
        "/v1/log/checkpoint",
        "/v1/log/key",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
        "/v1/log/entries/{index}",
        "/tile/{path}",
        "/v1/readings/{index}/evidence",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every operation has its own operationId (code generators and validators require it).
    let mut ids = std::collections::HashSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(
                ids.insert(id.clone()),
                "operationId {id:?} of {method} {path} is not unique"
            );
            // A path parameter must be in the path (a query struct without
            // `#[into_params(parameter_in = Query)]` would land here).
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name}"
                    );
                }
            }
        }
    }
    for path in [
        "/v1/alerts",
        "/v1/alerts/{id}/acknowledge",
        "/v1/webhooks/endpoints",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}
