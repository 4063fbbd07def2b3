//! Bearer-token authentication with roles. Tokens come from configuration (by env var or
//! file); comparison is constant-time. With no tokens configured the daemon only listens
//! on loopback (checked at start) and every caller is the local operator.
//!
//! A browser that logged in at `/login` carries a session cookie instead (see
//! `web::session`): it identifies the same token, and reads the API (`GET`, the live event
//! stream) — but the API's actions still take a bearer token, so no page can make a
//! logged-in browser act through them; the dashboard's own forms carry a CSRF token.

use axum::{
    extract::FromRequestParts,
    http::{header::AUTHORIZATION, request::Parts, Method, StatusCode},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState};
use crate::{
    config::{resolve_secret, ConfigError, Role, TokenConfig},
    store::Session,
};

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET endpoints: viewer or operator.
    Read,
    /// Runs, acks, resets: operator.
    Operate,
    /// Alert ingestion: ingest or operator.
    Ingest,
}

struct Token {
    name: String,
    secret: SecretString,
    /// SHA-256 of the secret (hex): what a session remembers of the token.
    digest: String,
    role: Role,
}

/// The configured tokens, and the failures of each client address.
pub struct Auth {
    tokens: Vec<Token>,
    /// Wrong tokens per address (`/login` and bearer headers): see [`super::throttle`].
    pub(crate) throttle: super::throttle::Throttle,
}

impl Auth {
    /// Resolves every token's secret now, so a missing variable fails the start.
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Auth, ConfigError> {
        let tokens = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let secret = resolve_secret(
                    &format!("server.tokens[{i}] ({})", t.name),
                    t.token_env.as_deref(),
                    t.token_file.as_deref(),
                )?;
                Ok(Token {
                    name: t.name.clone(),
                    digest: hex::encode(Sha256::digest(secret.expose_secret().as_bytes())),
                    secret,
                    role: t.role,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Auth {
            tokens,
            throttle: Default::default(),
        })
    }

    /// True when no tokens are configured (loopback-only mode).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn identify(&self, presented: &str) -> Option<&Token> {
        // Compare against every token so timing does not reveal which one nearly matched.
        let mut found = None;
        for t in &self.tokens {
            if bool::from(
                t.secret
                    .expose_secret()
                    .as_bytes()
                    .ct_eq(presented.as_bytes()),
            ) {
                found = Some(t);
            }
        }
        found
    }

    /// The token a dashboard login presents: its name and the digest a session keeps.
    pub(crate) fn login(&self, presented: &str) -> Option<(String, String, Role)> {
        self.identify(presented)
            .map(|t| (t.name.clone(), t.digest.clone(), t.role))
    }

    /// True while the token `session` was opened with exists with the same secret.
    pub(crate) fn session_token_holds(&self, session: &Session) -> bool {
        self.by_session(session).is_some()
    }

    /// The token a session was opened with, if it still exists with the same secret.
    fn by_session(&self, session: &Session) -> Option<&Token> {
        self.tokens.iter().find(|t| {
            t.name == session.token_name
                && bool::from(t.digest.as_bytes().ct_eq(session.token_digest.as_bytes()))
        })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name, or `local` without auth; recorded as the actor.
    pub name: String,
    role: Option<Role>,
    /// Set when a dashboard session cookie (not a bearer token) authenticated the request:
    /// the CSRF token its forms must carry.
    pub(crate) session_csrf: Option<String>,
}

impl Caller {
    /// The role, `None` on a daemon without tokens (every caller may do everything).
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// True when the caller may `access` (without the error [`Caller::require`] gives).
    pub fn may(&self, access: Access) -> bool {
        self.require(access).is_ok()
    }

    /// The caller presented a token (the daemon has tokens): `name` is who they are.
    pub fn identified(&self) -> bool {
        self.role.is_some()
    }

    /// Refuses with 403 unless the caller's role grants `access`.
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        let allowed = matches!(
            (self.role, access),
            (None, _)
                | (Some(Role::Operator), _)
                | (Some(Role::Viewer), Access::Read)
                | (Some(Role::Ingest), Access::Ingest)
        );
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token `{}` (role {:?}) may not do this; it needs {}",
                    self.name,
                    self.role
                        .map(|r| format!("{r:?}").to_lowercase())
                        .unwrap_or_default(),
                    match access {
                        Access::Read => "viewer or operator",
                        Access::Operate => "operator",
                        Access::Ingest => "ingest or operator",
                    }
                ),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        // A session cookie reads the API; its actions take a bearer token (the dashboard's
        // forms are CSRF-checked routes of their own).
        let reads = matches!(parts.method, Method::GET | Method::HEAD);
        if caller.session_csrf.is_some() && !reads && parts.uri.path().starts_with("/api/") {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a dashboard session only reads the API; its actions take `Authorization: Bearer <token>`",
            ));
        }
        Ok(caller)
    }
}

/// Who sent the request: a bearer token, else a dashboard session cookie, else (without
/// tokens) the local operator.
pub(crate) async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    if state.auth.is_open() {
        return Ok(Caller {
            name: "local".into(),
            role: None,
            session_csrf: None,
        });
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        if let Some(secret) = crate::web::session::cookie_secret(&parts.headers) {
            let session = state
                .store
                .session(&crate::web::session::id_hash(&secret))
                .await?
                .ok_or_else(|| unauthorized("the dashboard session expired; log in again"))?;
            let token = state.auth.by_session(&session).ok_or_else(|| {
                unauthorized(
                    "the token this session logged in with was changed or removed; log in again",
                )
            })?;
            return Ok(Caller {
                name: token.name.clone(),
                role: Some(token.role),
                session_csrf: Some(crate::web::session::csrf_for(&secret)),
            });
        }
        return Err(unauthorized(
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    let header = header
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("Authorization header must be `Bearer <token>`"))?
        .trim();
    let peer = super::throttle::peer(parts);
    if let Some(wait) = state.auth.throttle.waiting(peer) {
        return Err(ApiError::throttled(wait));
    }
    let Some(token) = state.auth.identify(presented) else {
        let wait = state.auth.throttle.failed(peer);
        tracing::warn!(
            peer = %super::throttle::peer_text(peer),
            path = %parts.uri.path(),
            wait_s = wait.map(|w| w.as_secs()),
            "bearer token refused: unknown token"
        );
        return Err(unauthorized("unknown token"));
    };
    state.auth.throttle.succeeded(peer);
    Ok(Caller {
        name: token.name.clone(),
        role: Some(token.role),
        session_csrf: None,
    })
}
