//! Bearer tokens with roles. A token is random, shown once when created, and stored only as its
//! SHA-256 hash with a public id (`tok_…`), an expiry, a revocation, its last use and — for a
//! gateway token — the one gateway it may speak for. A request carries
//! `Authorization: Bearer <token>`; an unknown, expired or revoked token is 401 on every node at
//! once (the state is read from storage on each request).
//!
//! The role matrix (who may do what) is in `docs/SECURITY.md`; every handler states its roles
//! with one of the constants below or a role extractor.

use crate::db::{Db, StorageError, TokenRow};
use crate::error::ApiError;
use crate::state::{now_ms, Shared};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Registry, tokens, webhooks, the access trail, approvals; reads everything.
    Admin,
    /// Reads readings and alerts, acknowledges and resolves alerts, sets patient limits.
    Clinician,
    /// Reads readings, runs exports of its own.
    Archivist,
    /// Reads entries, readings and evidence.
    Auditor,
    /// Submits readings of its own gateway, reads its own registry view.
    Gateway,
    /// Reads the service's metrics, nothing else (for a Prometheus scraper).
    Monitor,
    /// Private mode: reads its own household's feed of messages it alone can decrypt (the
    /// owner's app, `vitals-home`), nothing else.
    Household,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Clinician,
        Role::Archivist,
        Role::Auditor,
        Role::Gateway,
        Role::Monitor,
        Role::Household,
    ];

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
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
            Role::Household => "household",
        }
    }
}

/// Roles that may read the metrics (which name no patient, but tell the load and the errors).
pub const MONITORS: &[Role] = &[Role::Admin, Role::Monitor];

/// Roles that may read readings, entries and evidence.
pub const READERS: &[Role] = &[Role::Admin, Role::Clinician, Role::Archivist, Role::Auditor];

/// Roles that may read alerts and patients' limits (the archive exports no alerts).
pub const ALERT_READERS: &[Role] = &[Role::Admin, Role::Clinician, Role::Auditor];

/// Roles that act on alerts and set patients' limits.
pub const CLINICAL: &[Role] = &[Role::Admin, Role::Clinician];

/// Roles that run exports.
pub const ARCHIVISTS: &[Role] = &[Role::Admin, Role::Archivist];

/// Roles that read security alerts.
pub const SECURITY: &[Role] = &[Role::Admin, Role::Auditor];

/// Roles that read a gateway's registry view.
pub const GATEWAY_VIEW: &[Role] = &[Role::Admin, Role::Gateway];

/// Roles that read a household's feed of private messages (a household token: its own only).
pub const HOUSEHOLD_READERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Household];

/// A gateway token's scope that means "any gateway" (a relay forwarding for several; asked for
/// explicitly).
pub const ANY_GATEWAY: &str = "*";

/// Tokens end after this many days unless asked otherwise.
pub use crate::config::DEFAULT_TTL_DAYS;

/// The longest a token may live, days.
pub const MAX_TTL_DAYS: u64 = 3650;

const DAY_MS: u64 = 24 * 3600 * 1000;

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Its role.
    pub role: Role,
    /// A name to recognise it by (1 to 128 characters, no control characters).
    pub name: String,
    /// Days until it expires (1 to [`MAX_TTL_DAYS`]).
    pub ttl_days: u64,
    /// For a gateway token (required then, refused otherwise): its gateway id, or
    /// [`ANY_GATEWAY`].
    pub gateway: Option<String>,
    /// Who creates it: `cli` or the creating token's name.
    pub created_by: String,
}

/// A token just made: the secret (the only time it exists in clear) and its stored row.
pub struct Issued {
    /// The bearer secret, `vlt_…`.
    pub secret: String,
    /// What is stored of it.
    pub row: TokenRow,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("secret", &"<redacted>")
            .field("row", &self.row)
            .finish()
    }
}

/// Why a token cannot be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such token.
    #[error("no token {0}")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(d) => ApiError::bad_request("invalid-token-request", d),
            TokenError::NotFound(id) => ApiError::not_found(format!("no token {id}")),
            TokenError::Storage(e) => e.into(),
        }
    }
}

/// Checks a spec: the name, the lifetime, the gateway scope.
fn check_spec(spec: &TokenSpec) -> Result<(), TokenError> {
    let bad = |m: &str| Err(TokenError::Invalid(m.into()));
    if spec.name.is_empty()
        || spec.name.chars().count() > 128
        || spec.name.chars().any(char::is_control)
    {
        return bad("name: 1 to 128 characters, no control characters");
    }
    if spec.ttl_days == 0 || spec.ttl_days > MAX_TTL_DAYS {
        return bad("expires_in_days: 1 to 3650");
    }
    match (&spec.gateway, spec.role) {
        (Some(g), Role::Gateway) if g == ANY_GATEWAY || provenance_core::reading::valid_device_id(g) => Ok(()),
        (Some(_), Role::Gateway) => bad("gateway: a device id (1 to 64 letters, digits, '.', '_', ':' or '-'), or \"*\" for any gateway"),
        (None, Role::Gateway) => bad("a gateway token names its gateway (gateway), or \"*\" for a relay that may submit for any gateway"),
        (Some(h), Role::Household) if provenance_core::reading::valid_device_id(h) => Ok(()),
        (_, Role::Household) => bad("a household token names its household (household): 1 to 64 letters, digits, '.', '_', ':' or '-'"),
        (Some(_), _) => bad("gateway: only a gateway token names a gateway"),
        (None, _) => Ok(()),
    }
}

/// Makes a token.
pub async fn issue_token(db: &Db, spec: &TokenSpec) -> Result<Issued, TokenError> {
    check_spec(spec)?;
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let secret = format!("vlt_{}", B64URL.encode(raw));
    let hash = token_hash(&secret);
    let now = now_ms();
    let row = TokenRow {
        id: format!("tok_{}", hex::encode(&hash[..8])),
        role: spec.role.as_str().into(),
        name: spec.name.clone(),
        gateway: spec.gateway.clone(),
        created_at: now,
        created_by: spec.created_by.clone(),
        expires_at: now.saturating_add(spec.ttl_days.saturating_mul(DAY_MS)),
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
    };
    db.insert_token(&hash, &row).await?;
    Ok(Issued { secret, row })
}

/// Creates a token for `role` that lives [`DEFAULT_TTL_DAYS`] (a gateway token: for any
/// gateway; bind one with [`issue_token`]); returns the secret.
pub async fn create_token(db: &Db, role: Role, name: &str) -> Result<String, StorageError> {
    let spec = TokenSpec {
        role,
        name: name.into(),
        ttl_days: DEFAULT_TTL_DAYS,
        gateway: (role == Role::Gateway).then(|| ANY_GATEWAY.to_string()),
        created_by: "cli".into(),
    };
    match issue_token(db, &spec).await {
        Ok(i) => Ok(i.secret),
        Err(TokenError::Storage(e)) => Err(e),
        Err(e) => Err(StorageError::Constraint(e.to_string())),
    }
}

/// Creates a household token that reads `household`'s feed, living [`DEFAULT_TTL_DAYS`];
/// returns the secret.
pub async fn create_household_token(
    db: &Db,
    household: &str,
    name: &str,
) -> Result<String, TokenError> {
    let spec = TokenSpec {
        role: Role::Household,
        name: name.into(),
        ttl_days: DEFAULT_TTL_DAYS,
        gateway: Some(household.into()),
        created_by: "cli".into(),
    };
    issue_token(db, &spec).await.map(|i| i.secret)
}

/// Every token, oldest first (for the CLI).
pub async fn list_tokens(db: &Db) -> Result<Vec<TokenRow>, StorageError> {
    let mut out: Vec<TokenRow> = Vec::new();
    loop {
        let after = out.last().map(|t| (t.created_at, t.id.as_str()));
        let page = db.tokens_page(after, 1000).await?;
        let more = page.len() == 1000;
        out.extend(page);
        if !more {
            return Ok(out);
        }
    }
}

/// Revokes a token now.
pub async fn revoke_token(db: &Db, id: &str, by: &str) -> Result<TokenRow, TokenError> {
    let found = db
        .token_by_id(id)
        .await?
        .ok_or_else(|| TokenError::NotFound(id.into()))?;
    if found.revoked_at.is_none() {
        db.revoke_token(id, now_ms(), by).await?;
    }
    db.token_by_id(id)
        .await?
        .ok_or_else(|| TokenError::NotFound(id.into()))
}

/// Rotates a token: a new one with the same role, name, scope and lifetime, and the old one
/// ends `overlap_hours` from now (at the latest), so its holder can switch without a gap.
/// Returns the new token and the old one's row.
pub async fn rotate_token(
    db: &Db,
    id: &str,
    overlap_hours: u64,
    by: &str,
) -> Result<(Issued, TokenRow), TokenError> {
    let old = db
        .token_by_id(id)
        .await?
        .ok_or_else(|| TokenError::NotFound(id.into()))?;
    let now = now_ms();
    if old.revoked_at.is_some() || old.expires_at <= now {
        return Err(TokenError::Invalid(format!(
            "{id} has ended: make a new token instead"
        )));
    }
    if overlap_hours > 30 * 24 {
        return Err(TokenError::Invalid("overlap_hours: 0 to 720".into()));
    }
    let role = Role::parse(&old.role)
        .ok_or_else(|| TokenError::Invalid(format!("{id} has an unknown role")))?;
    let ttl_days = (old.expires_at - old.created_at)
        .div_ceil(DAY_MS)
        .clamp(1, MAX_TTL_DAYS);
    let new = issue_token(
        db,
        &TokenSpec {
            role,
            name: old.name.clone(),
            ttl_days,
            gateway: old.gateway.clone(),
            created_by: by.into(),
        },
    )
    .await?;
    db.expire_token_by(
        id,
        now.saturating_add(overlap_hours.saturating_mul(3600 * 1000)),
    )
    .await?;
    let old = db
        .token_by_id(id)
        .await?
        .ok_or_else(|| TokenError::NotFound(id.into()))?;
    Ok((new, old))
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its role.
    pub role: Role,
    /// The token's public id.
    pub token_id: String,
    /// The token's name (recorded as the actor of what it does).
    pub name: String,
    /// For a gateway token: its gateway id, or [`ANY_GATEWAY`].
    pub gateway: Option<String>,
}

/// A caller whose name is used (the same type; kept for the handlers that say so).
pub type NamedCaller = Caller;

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

    /// Whether this caller may act for gateway `id` (any non-gateway role may, as far as the
    /// scope goes; its role is checked separately).
    pub fn speaks_for(&self, id: &str) -> bool {
        match (&self.role, &self.gateway) {
            (Role::Gateway, Some(g)) => g == ANY_GATEWAY || g == id,
            (Role::Gateway, None) => false,
            _ => true,
        }
    }

    /// Whether this caller may read household `id`'s feed (a household token: only its own).
    pub fn reads_household(&self, id: &str) -> bool {
        match (&self.role, &self.gateway) {
            (Role::Household, Some(h)) => h == id,
            (Role::Household, None) => false,
            _ => true,
        }
    }

    /// The gateway a gateway token is bound to (`None`: any, or not a gateway token).
    pub fn bound_gateway(&self) -> Option<&str> {
        match (&self.role, self.gateway.as_deref()) {
            (Role::Gateway, Some(g)) if g != ANY_GATEWAY => Some(g),
            _ => None,
        }
    }
}

/// Where the caller's identity is left by the token check for the trail to read.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Caller>>>);

impl CallerSlot {
    /// Leaves the caller.
    pub fn set(&self, c: &Caller) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
    }

    /// Takes the caller left (once).
    pub fn take(&self) -> Option<Caller> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The caller of the request's bearer token.
async fn lookup(parts: &Parts, state: &Shared) -> Result<Caller, ApiError> {
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
    let hash = token_hash(token);
    let row = state
        .db
        .token(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    let now = now_ms();
    if row.revoked_at.is_some() {
        return Err(ApiError::unauthorized(format!(
            "token {} was revoked",
            row.id
        )));
    }
    if row.expires_at <= now {
        return Err(ApiError::unauthorized(format!(
            "token {} has expired",
            row.id
        )));
    }
    let role = Role::parse(&row.role).ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    // A read node writes nothing (its sessions are read-only): no last-use time from it.
    if state.reader.get().is_none() && state.token_uses.due(&hash, now) {
        if let Err(e) = state.db.touch_token(&hash, now).await {
            // The request goes on: the last-use time is a help, not a gate.
            tracing::warn!(error = %e, token = %row.id, "cannot record a token's last use");
        }
    }
    Ok(Caller {
        role,
        token_id: row.id,
        name: row.name,
        gateway: row.gateway,
    })
}

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let caller = lookup(parts, state).await?;
        // The access trail names who asked (see `access.rs`).
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            slot.set(&caller);
        }
        Ok(caller)
    }
}

/// A set of roles, as a type (for [`Allowed`]).
pub trait Roles: Send + Sync + 'static {
    /// The roles.
    const ROLES: &'static [Role];
}

/// A caller whose role is one of `R`'s, checked before anything else of the request is read
/// (its path, query or body), so a wrong role is `403` whatever it sent.
#[derive(Debug, Clone)]
pub struct Allowed<R: Roles>(pub Caller, pub std::marker::PhantomData<R>);

impl<R: Roles> FromRequestParts<Arc<Shared>> for Allowed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller
            .require(R::ROLES)
            .map(|c| Allowed(c, std::marker::PhantomData))
    }
}

macro_rules! role_set {
    ($name:ident, $roles:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name;
        impl Roles for $name {
            const ROLES: &'static [Role] = $roles;
        }
    };
}

role_set!(
    Readers,
    READERS,
    "Who reads readings, entries and evidence."
);
role_set!(AlertReaders, ALERT_READERS, "Who reads alerts and limits.");
role_set!(Clinical, CLINICAL, "Who acts on alerts and limits.");
role_set!(Archivists, ARCHIVISTS, "Who runs exports.");
role_set!(SecurityReaders, SECURITY, "Who reads security alerts.");
role_set!(Monitors, MONITORS, "Who reads the metrics.");
role_set!(
    GatewayView,
    GATEWAY_VIEW,
    "Who reads a gateway's registry view."
);
role_set!(
    HouseholdReaders,
    HOUSEHOLD_READERS,
    "Who reads a household's feed."
);

macro_rules! role_extractor {
    ($name:ident, $doc:literal, $($role:expr),+) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
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

#[cfg(test)]
mod tests;
