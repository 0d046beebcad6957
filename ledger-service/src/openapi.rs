//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa), served at
//! `/openapi.json`, with the API console (Swagger UI, vendored: no internet needed) at `/docs`.
//! `openapi/ledger-service.json` is the committed copy; a test fails when it is stale.

use crate::routes;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
                "API token (`ledger-service create-token --role …` or `POST /v1/tokens`); roles: admin, clinician, archivist, auditor, gateway, monitor; tokens expire (90 days by default) and can be revoked",
            )).build()),
        );
    }
}

/// The answers the HTTP edge may give to any operation (problem+json), added to every operation
/// that does not document them itself: malformed input (400), the request timeout (408), an
/// unsupported `Content-Encoding` (415), overload or a standby node (503 with `Retry-After`);
/// 401 and 403 where a token is required; 404 where the path has parameters; 413 where there is
/// a body.
struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let mut add = vec![
                    ("400", "Malformed request: parameters, body or control characters"),
                    ("408", "The request was not complete in time"),
                    ("415", "Unsupported Content-Type or Content-Encoding"),
                    ("503", "Overloaded, storage unavailable or a standby node: retry after Retry-After"),
                ];
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add.push(("401", "Missing or unknown token"));
                    add.push(("403", "The token's role may not do this"));
                }
                if path.contains('{') {
                    add.push(("404", "No such resource"));
                }
                if op.request_body.is_some() {
                    add.push(("413", "Body too large"));
                }
                for (code, description) in add {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| problem(description).into());
                }
            }
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vital-sign provenance ledger",
        description = "Registry, verified ingest, Merkle log (RFC 9162, C2SP checkpoints and tiles), proofs and evidence bundles, clinical alerts and clinician webhooks. Errors are RFC 9457 application/problem+json. Formats: docs/FORMATS.md.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::ingest::ingest,
        routes::registry::enroll_issuer,
        routes::registry::enroll_sensor,
        routes::registry::enroll_gateway,
        routes::registry::bind,
        routes::registry::assign,
        routes::registry::rotate,
        routes::registry::revoke,
        routes::registry::gateway_events,
        routes::log::checkpoint,
        routes::log::key,
        routes::log::inclusion,
        routes::log::consistency,
        routes::log::entry,
        routes::log::registry_entries,
        routes::log::tile,
        routes::shards::list,
        routes::shards::checkpoint,
        routes::shards::tile,
        routes::readings::list,
        routes::readings::one,
        routes::readings::evidence,
        routes::fhir::metadata,
        routes::fhir::observation::search,
        routes::fhir::observation::read,
        routes::fhir::resources::device_search,
        routes::fhir::resources::device_read,
        routes::fhir::resources::provenance_search,
        routes::fhir::resources::provenance_read,
        routes::fhir::resources::patient_search,
        routes::fhir::resources::patient_read,
        routes::alerts::list_alerts,
        routes::alerts::get_alert,
        routes::alerts::acknowledge,
        routes::alerts::resolve,
        routes::alerts::get_limits,
        routes::alerts::put_limits,
        routes::webhooks::create_endpoint,
        routes::webhooks::list_endpoints,
        routes::webhooks::rotate_secret,
        routes::webhooks::disable_endpoint,
        routes::webhooks::enable_endpoint,
        routes::webhooks::list_messages,
        routes::webhooks::list_attempts,
        routes::webhooks::replay_message,
        routes::exports::export_kick_off,
        routes::exports::export_status,
        routes::exports::cancel_export,
        routes::exports::download_export_file,
        routes::exports::acknowledge_export,
        routes::exports::approve_pruning,
        routes::tokens::create_token,
        routes::tokens::list_tokens,
        routes::tokens::get_token,
        routes::tokens::revoke_token,
        routes::tokens::rotate_token,
        routes::access::list_access,
        routes::security::list_security_alerts,
        routes::ward::me,
        routes::households::enroll_recipient,
        routes::households::bind_household,
        routes::households::feed,
        routes::ward::ward,
        routes::ward::series,
        routes::status::log_status,
        routes::status::devices,
        routes::exports::list_exports,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth, &EdgeResponses),
    tags(
        (name = "ingest", description = "Gateways submit doubly signed readings"),
        (name = "security", description = "Security alerts (admin, auditor)"),
        (name = "access", description = "The access trail of patient data (admin)"),
        (name = "tokens", description = "API tokens: create, list, revoke, rotate (admin)"),
        (name = "registry", description = "Issuers, devices, bindings, patients, rotation, revocation (admin)"),
        (name = "log", description = "Checkpoints, proofs, entries and tiles (public but entries)"),
        (name = "readings", description = "Readings for hospital systems, and evidence bundles"),
        (name = "fhir", description = "The FHIR R4 facade for integration engines (read-only, application/fhir+json; errors are OperationOutcomes; see /fhir/metadata)"),
        (name = "alerts", description = "Clinical alerts (NEWS2 and patient limits): list, acknowledge, resolve; patient alert limits"),
        (name = "webhooks", description = "Clinician webhooks (Standard Webhooks): endpoints, secrets, delivery log, dead letters (admin)"),
        (name = "exports", description = "Archival exports (FHIR Bulk Data $export) with evidence; acknowledgement and pruning (archivist)"),
        (name = "app", description = "What the web app's pages read: the caller, the ward overview, patient charts"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (the committed `openapi/ledger-service.json`).
pub fn json() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// `/openapi.json`, and the API console at `/docs`: Swagger UI, vendored into the binary
/// (`utoipa-swagger-ui`'s `vendored` feature: no request leaves the service), reading
/// `/openapi.json`, with bearer-token authorisation (kept across reloads in the browser's
/// storage) and "Try it out" against this service. The online validator is off.
pub fn router() -> Router<Arc<crate::state::Shared>> {
    let console = utoipa_swagger_ui::SwaggerUi::new("/docs").config(
        utoipa_swagger_ui::Config::from("/openapi.json")
            .persist_authorization(true)
            .display_request_duration(true)
            .validator_url("none"),
    );
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], json()) }),
        )
        .merge(console)
}
