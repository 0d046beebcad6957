//! Bearer tokens with roles. Tokens are random, shown once when created, and stored only as
//! their SHA-256 hash; a request carries `Authorization: Bearer <token>`.

use crate::db::Db;
use crate::error::ApiError;
use crate::state::Shared;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Registry writes and everything else.
    Admin,
    /// Reads readings and alerts.
    Clinician,
    /// Reads readings, runs exports.
    Archivist,
    /// Reads entries and evidence.
    Auditor,
    /// Submits readings.
    Gateway,
    /// Reads the service's metrics, nothing else (for a Prometheus scraper).
    Monitor,
}

impl Role {
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Role::Admin,
            "clinician" => Role::Clinician,
            "archivist" => Role::Archivist,
            "auditor" => Role::Auditor,
            "gateway" => Role::Gateway,
            "monitor" => Role::Monitor,
            _ => return None,
        })
    }

    /// The role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Archivist => "archivist",
            Role::Auditor => "auditor",
            Role::Gateway => "gateway",
            Role::Monitor => "monitor",
        }
    }
}

/// Roles that may read the metrics (which name no patient, but tell the load and the errors).
pub const MONITORS: &[Role] = &[Role::Admin, Role::Monitor];

/// Roles that may read readings, entries and evidence.
pub const READERS: &[Role] = &[Role::Admin, Role::Clinician, Role::Archivist, Role::Auditor];

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token for `role`; returns the token (the only time it exists in clear).
pub async fn create_token(
    db: &Db,
    role: Role,
    name: &str,
) -> Result<String, crate::db::StorageError> {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let token = format!("vlt_{}", B64URL.encode(raw));
    db.insert_token(
        &token_hash(&token),
        role.as_str(),
        name,
        crate::state::now_ms(),
    )
    .await?;
    Ok(token)
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Requires one of `roles`.
    pub fn require(self, roles: &[Role]) -> Result<Self, ApiError> {
        if roles.contains(&self.role) {
            Ok(self)
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.role.as_str()
            )))
        }
    }
}

/// The role and name of the request's bearer token.
async fn lookup(parts: &Parts, state: &Shared) -> Result<(Role, String), ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer token is required"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = h.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
        })?;
    state
        .db
        .token(&token_hash(token))
        .await?
        .and_then(|(r, name)| Some((Role::parse(&r)?, name)))
        .ok_or_else(|| ApiError::unauthorized("unknown token"))
}

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let (role, _) = lookup(parts, state).await?;
        Ok(Caller { role })
    }
}

/// A caller with its token's name (recorded as the actor of what it does).
#[derive(Debug, Clone)]
pub struct NamedCaller {
    /// Role.
    pub role: Role,
    /// The token's name.
    pub name: String,
}

impl NamedCaller {
    /// The caller if its role is one of `roles`, else 403.
    pub fn require(self, roles: &[Role]) -> Result<Self, ApiError> {
        Caller { role: self.role }.require(roles)?;
        Ok(self)
    }
}

impl FromRequestParts<Arc<Shared>> for NamedCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let (role, name) = lookup(parts, state).await?;
        Ok(NamedCaller { role, name })
    }
}

macro_rules! role_extractor {
    ($name:ident, $doc:literal, $($role:expr),+) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        // The caller stays available to handlers that need it; some only need the check.
        #[allow(dead_code)]
        pub struct $name(pub Caller);

        impl FromRequestParts<Arc<Shared>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &Arc<Shared>) -> Result<Self, Self::Rejection> {
                // Checked before the body is read, so a wrong role is 403 whatever the body.
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require(&[$($role),+]).map($name)
            }
        }
    };
}

role_extractor!(AdminCaller, "A caller with the admin role.", Role::Admin);
role_extractor!(
    GatewayCaller,
    "A caller with the gateway role.",
    Role::Gateway
);
