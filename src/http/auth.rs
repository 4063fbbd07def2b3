//! Bearer-token authentication with roles. Tokens come from configuration (by env var or
//! file); comparison is constant-time. With no tokens configured the daemon only listens
//! on loopback (checked at start) and every caller is the local operator.
//!
//! A browser that logged in at `/login` carries a session cookie instead (see
//! [`super::session`]): it identifies the same token, and reads the API (`GET`, the live event
//! stream) — but the API's actions still take a bearer token, so no page can make a
//! logged-in browser act through them; the dashboard's own forms carry a CSRF token.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header::AUTHORIZATION, request::Parts, Method, StatusCode},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{caller::Caller, error::ApiError, session, throttle};
use crate::{
    config::{resolve_secret, ConfigError, Role, TokenConfig},
    store::{Session, Store},
};

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
    pub(crate) throttle: throttle::Throttle,
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

/// Any state the auth tokens and the session store can be cut from authenticates.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
    Store: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Auth>::from_ref(state);
        let caller = authenticate(parts, &auth, &Store::from_ref(state)).await?;
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

/// Who sent the request: a bearer token, else a dashboard session cookie (kept in
/// `store`), else (without tokens) the local operator.
pub(crate) async fn authenticate(
    parts: &Parts,
    auth: &Auth,
    store: &Store,
) -> Result<Caller, ApiError> {
    if auth.is_open() {
        return Ok(Caller {
            name: "local".into(),
            role: None,
            session_csrf: None,
        });
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        if let Some(secret) = session::cookie_secret(&parts.headers) {
            let session = store
                .session(&session::id_hash(&secret))
                .await?
                .ok_or_else(|| unauthorized("the dashboard session expired; log in again"))?;
            let token = auth.by_session(&session).ok_or_else(|| {
                unauthorized(
                    "the token this session logged in with was changed or removed; log in again",
                )
            })?;
            return Ok(Caller {
                name: token.name.clone(),
                role: Some(token.role),
                session_csrf: Some(session::csrf_for(&secret)),
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
    let peer = throttle::peer(parts);
    if let Some(wait) = auth.throttle.waiting(peer) {
        return Err(ApiError::throttled(wait));
    }
    let Some(token) = auth.identify(presented) else {
        let wait = auth.throttle.failed(peer);
        tracing::warn!(
            peer = %throttle::peer_text(peer),
            path = %parts.uri.path(),
            wait_s = wait.map(|w| w.as_secs()),
            "bearer token refused: unknown token"
        );
        return Err(unauthorized("unknown token"));
    };
    auth.throttle.succeeded(peer);
    Ok(Caller {
        name: token.name.clone(),
        role: Some(token.role),
        session_csrf: None,
    })
}
