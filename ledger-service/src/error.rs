//! RFC 9457 problem details: every error answer of the API is `application/problem+json` with a
//! stable `type` URI. Internal errors are logged once, here, and never detailed to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An RFC 9457 problem (every error answer).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable problem type URI (`https://vitals-ledger.example/problems/<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary (the HTTP reason phrase).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

/// Base of the problem type URIs.
pub const PROBLEM_BASE: &str = "https://vitals-ledger.example/problems/";

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Problem type slug (appended to [`PROBLEM_BASE`]).
    pub kind: &'static str,
    /// Human-readable explanation for this occurrence.
    pub detail: String,
    /// Extension members.
    pub extra: Option<Value>,
    /// Seconds to wait before retrying (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// 400 with a type.
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 503 with Retry-After: storage or sequencer unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        }
    }

    /// 500: logs the cause, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// Adds extension members.
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl From<crate::db::StorageError> for ApiError {
    fn from(e: crate::db::StorageError) -> Self {
        use crate::db::StorageError as E;
        match e {
            // Transient: the client may retry (another node may lead by then).
            E::Unavailable(_) | E::Fenced { .. } => {
                tracing::error!(error = %e, "storage unavailable");
                Self::unavailable("storage is unavailable; retry later")
            }
            // A bug or bad stored data: logged with the row, nothing of it told to the client.
            E::Corrupt { .. } | E::Constraint(_) | E::Migrate(_) => Self::internal(e),
        }
    }
}

impl From<crate::mailbox::SequenceError> for ApiError {
    fn from(e: crate::mailbox::SequenceError) -> Self {
        use crate::mailbox::SequenceError as E;
        match &e {
            E::NotRunning | E::Stopped => Self::unavailable(e.to_string()),
            E::Storage(cause) => {
                tracing::error!(error = %cause, "the sequencer's batch was not committed");
                Self::unavailable("storage is unavailable; retry later")
            }
        }
    }
}

impl From<crate::evidence::EvidenceError> for ApiError {
    fn from(e: crate::evidence::EvidenceError) -> Self {
        use crate::evidence::EvidenceError as E;
        match e {
            E::NoEntry(_) | E::NotAReading(_) => Self::not_found(e.to_string()),
            E::Pruned { ref export, .. } => {
                let export = export.clone();
                Self::new(StatusCode::GONE, "reading-pruned", e.to_string())
                    .with(serde_json::json!({ "export": export }))
            }
            E::NotYetCheckpointed(_) => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::CONFLICT,
                    "not-yet-checkpointed",
                    "the reading is logged but not yet in a published checkpoint",
                )
            },
            E::ShardedFeed => Self::new(StatusCode::NOT_IMPLEMENTED, "sharded-feed", e.to_string()),
            E::Storage(e) => e.into(),
            E::CorruptEntry { .. }
            | E::RegistryIncomplete { .. }
            | E::Registry { .. }
            | E::Proof { .. } => Self::internal(e),
        }
    }
}

impl From<crate::exports::ExportError> for ApiError {
    fn from(e: crate::exports::ExportError) -> Self {
        use crate::exports::ExportError as E;
        match e {
            E::NoCheckpoint => {
                Self::new(StatusCode::CONFLICT, "not-yet-checkpointed", e.to_string())
            }
            E::BeyondCheckpoint { .. }
            | E::NotACheckpoint { .. }
            | E::AcrossShards { .. }
            | E::EmptyRange { .. } => Self::bad_request("invalid-export-request", e.to_string()),
            E::NotComplete { .. } => {
                Self::new(StatusCode::CONFLICT, "export-not-complete", e.to_string())
            }
            E::NoJob(_) => Self::not_found(e.to_string()),
            E::Acknowledged(_) | E::Approved(_) => {
                Self::new(StatusCode::CONFLICT, "export-acknowledged", e.to_string())
            }
            E::DigestMismatch { .. } => Self::new(
                StatusCode::CONFLICT,
                "manifest-digest-mismatch",
                e.to_string(),
            ),
            E::NotAcknowledged(_) => Self::new(
                StatusCode::CONFLICT,
                "export-not-acknowledged",
                e.to_string(),
            ),
            E::SamePerson(_) => Self::new(
                StatusCode::FORBIDDEN,
                "second-person-required",
                e.to_string(),
            ),
            E::Storage(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            for (k, v) in extra {
                map.insert(k, v);
            }
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
