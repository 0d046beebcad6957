//! The web app at `/app/` (and `/` sends a browser there): its files built into the binary
//! (`web/`, listed by the build script) and the browser's verifier (`web-verifier` compiled to
//! WebAssembly), served with a content security policy that lets the page talk to this origin
//! only — nothing is loaded from the internet, so it works on an air-gapped ward network.
//!
//! The files are public (the page signs in with a token the user enters, kept in the browser
//! session); every request for data is an API call with that token.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

mod files {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The browser's verifier module.
pub static VERIFIER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web_verifier.wasm"));

/// The page may load and call its own origin only; scripts are the app's files (and
/// WebAssembly compiled from them), no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The web routes.
pub fn router() -> Router<Arc<crate::state::Shared>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/app/") }))
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route(
            "/app/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/app/{*path}",
            get(|Path(p): Path<String>, h: HeaderMap| async move { serve(&p, &h) }),
        )
}

/// Every file the app serves: its path, bytes and strong ETag.
fn table() -> &'static [(&'static str, &'static [u8], String)] {
    static TABLE: OnceLock<Vec<(&'static str, &'static [u8], String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        files::FILES
            .iter()
            .copied()
            .chain(std::iter::once(("web_verifier.wasm", VERIFIER_WASM)))
            .map(|(p, b)| {
                (
                    p,
                    b,
                    format!("\"{}\"", hex::encode(&Sha256::digest(b)[..12])),
                )
            })
            .collect()
    })
}

/// The app's files and their sizes, bytes (for `docs/PERFORMANCE.md` and the tests).
pub fn asset_sizes() -> Vec<(&'static str, usize)> {
    table().iter().map(|(p, b, _)| (*p, b.len())).collect()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn serve(path: &str, req: &HeaderMap) -> Response {
    let Some((name, bytes, etag)) = table().iter().find(|(p, _, _)| *p == path) else {
        return crate::error::ApiError::not_found(format!("the web app has no file {path:?}"))
            .into_response();
    };
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, *bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load (an ETag round trip): an upgraded service is never mixed with
    // cached files of the last version.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}
