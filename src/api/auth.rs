//! Bearer-token authentication with roles. Tokens come from configuration (by env var or
//! file); comparison is constant-time. With no tokens configured the daemon only listens
//! on loopback (checked at start) and every caller is the local operator.

use axum::{
    extract::FromRequestParts,
    http::{header::AUTHORIZATION, request::Parts, StatusCode},
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState};
use crate::config::{resolve_secret, ConfigError, Role, TokenConfig};

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
    role: Role,
}

/// The configured tokens.
pub struct Auth {
    tokens: Vec<Token>,
}

impl Auth {
    /// Resolves every token's secret now, so a missing variable fails the start.
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Auth, ConfigError> {
        let tokens = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Ok(Token {
                    name: t.name.clone(),
                    secret: resolve_secret(
                        &format!("server.tokens[{i}] ({})", t.name),
                        t.token_env.as_deref(),
                        t.token_file.as_deref(),
                    )?,
                    role: t.role,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Auth { tokens })
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
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name, or `local` without auth; recorded as the actor.
    pub name: String,
    role: Option<Role>,
}

impl Caller {
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
        if state.auth.is_open() {
            return Ok(Caller {
                name: "local".into(),
                role: None,
            });
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("Authorization header must be `Bearer <token>`"))?
            .trim();
        let token = state
            .auth
            .identify(presented)
            .ok_or_else(|| unauthorized("unknown token"))?;
        Ok(Caller {
            name: token.name.clone(),
            role: Some(token.role),
        })
    }
}
