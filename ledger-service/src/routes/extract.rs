//! Extractors whose rejections are problem+json like every other error.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Largest JSON request body (registry requests carry a PEM certificate of about 1 KiB; the
/// body is parsed whole before it is checked, so the bound keeps that small).
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_declared_length(&req, MAX_JSON_BODY)?;
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => {
                if json_has_control(&v) {
                    return Err(control_refused("body", "invalid-body"));
                }
                serde_json::from_value(v)
                    .map(ApiJson)
                    .map_err(|e| ApiError::bad_request("invalid-body", format!("{e}")))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be application/json",
            )),
            Err(JsonRejection::BytesRejection(e)) => Err(body_error(&e.body_text())),
            Err(e) => Err(ApiError::bad_request("invalid-body", e.body_text())),
        }
    }
}

/// Refuses a request whose declared Content-Length exceeds `limit`, before reading any of it.
pub fn check_declared_length(req: &Request, limit: usize) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(body_error("length limit exceeded")),
        _ => Ok(()),
    }
}

/// Maps a body read failure (too large, or broken) to a problem.
pub fn body_error(text: &str) -> ApiError {
    if text.contains("length limit") || text.contains("too large") {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the request body is larger than allowed",
        )
    } else {
        ApiError::bad_request("invalid-body", "the request body could not be read")
    }
}

/// Whether percent-decoded `text` (a path or query, `+` as space) holds a control character
/// (C0 or DEL, NUL included): refused at the edge, so no engine is asked to store one.
pub fn has_control(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = if b[i] == b'%' && i + 2 < b.len() {
            let hex = |x: u8| (x as char).to_digit(16);
            match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 2;
                    (h * 16 + l) as u8
                }
                _ => b[i],
            }
        } else {
            b[i]
        };
        if c < 0x20 || c == 0x7f {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a JSON value holds a string (or key) with a control character other than tab, line
/// feed and carriage return (PEM certificates carry line breaks).
pub fn json_has_control(v: &serde_json::Value) -> bool {
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    match v {
        serde_json::Value::String(s) => bad(s),
        serde_json::Value::Array(a) => a.iter().any(json_has_control),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| bad(k) || json_has_control(v)),
        _ => false,
    }
}

fn control_refused(what: &'static str, kind: &'static str) -> ApiError {
    ApiError::bad_request(
        kind,
        format!("the {what} holds a control character (NUL, CR, LF, …): not accepted"),
    )
}

/// Query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(has_control) {
            return Err(control_refused("query", "invalid-query"));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid-query", e.body_text()))
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if has_control(parts.uri.path()) {
            return Err(control_refused("path", "invalid-path"));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid-path", e.body_text()))
    }
}

/// An opaque list cursor after an item: its order time and key (base64url of `time.key`).
pub fn cursor_of(at: u64, key: &str) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("{at}.{key}"),
    )
}

/// The (time, key) of a cursor [`cursor_of`] made; `None` for anything else.
pub fn parse_cursor(c: &str) -> Option<(u64, String)> {
    if c.len() > 256 {
        return None;
    }
    let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (a, k) = text.split_once('.')?;
    (!k.is_empty() && !has_control(k)).then(|| Some((a.parse().ok()?, k.to_string())))?
}

/// A cursor parameter, parsed, or 400.
pub fn cursor_param(c: Option<&str>) -> Result<Option<(u64, String)>, crate::error::ApiError> {
    c.map(|c| {
        parse_cursor(c).ok_or_else(|| {
            crate::error::ApiError::bad_request(
                "invalid-query",
                "cursor: not a cursor this service gave",
            )
        })
    })
    .transpose()
}
