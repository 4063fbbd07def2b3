//! The HTTP shell with two faces: the JSON API (`crate::api`) and the dashboard
//! (`crate::web`) are siblings that each export `routes()`; this module is what both stand
//! on, and [`router::router`] merges them with the probes under one set of layers. The
//! wiring hands the faces to the router, so the shell imports neither of them.
//!
//! - [`state`]: [`AppState`], what the wiring hands over, and the parts handlers take of it
//!   (`State<Store>`, `State<Actions>`, `State<Sessions>`, …: axum's `FromRef`).
//! - [`auth`] finds the [`caller::Caller`] of a request (bearer token, session cookie, or
//!   the local operator); [`caller`] says what its role lets it do.
//! - [`session`]: the session cookie and the CSRF tokens forms carry.
//! - [`actions`]: what both faces do (decide an approval, acknowledge or resolve an
//!   incident, start a run) and the playbooks as served.
//! - [`error`]: `ApiError`, the JSON error answer (the dashboard shows it as a page).
//! - [`guard`] keeps web pages from driving a daemon without tokens; [`throttle`] slows
//!   token guessing; [`slack`] checks Slack's signed requests.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`serve`]: the server loop and its connection limits; [`stalled`] cuts off a client
//!   that does not read its answers.

pub(crate) mod actions;
pub mod auth;
pub(crate) mod caller;
pub mod error;
mod guard;
pub(crate) mod health;
pub mod router;
pub mod serve;
pub(crate) mod session;
pub mod slack;
mod stalled;
pub mod state;
pub(crate) mod throttle;

pub use auth::Auth;
pub use error::ApiError;
pub use router::{router, RequestLimits};
pub use state::AppState;
