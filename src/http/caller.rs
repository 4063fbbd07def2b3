//! Who is asking, and what their role lets them do. [`super::auth`] finds the caller of a
//! request; every handler and action asks the caller before it reads or acts.

use axum::http::StatusCode;

use super::error::ApiError;
use crate::config::Role;

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

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name, or `local` without auth; recorded as the actor.
    pub name: String,
    pub(super) role: Option<Role>,
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
