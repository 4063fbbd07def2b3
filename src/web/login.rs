//! `/login` and `/logout`: a token in, a session cookie out, and back. The cookies and
//! CSRF tokens themselves are the shell's ([`crate::http::session`]).

use axum::{
    extract::{Form, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{pages::Chrome, render, CsrfForm, WebError};
use crate::{
    config::Role,
    http::{
        error::ApiError,
        session::{
            check_origin, check_token, cookie_secret, csrf_for, id_hash, local_back, random_secret,
            set_cookie, SESSION_COOKIE,
        },
        state::{Sessions, Simulated},
        throttle::{peer_text, retry_after_secs, Peer},
    },
};

/// Where to go after logging in: a local path only (no open redirect).
fn local_path(next: Option<&str>) -> String {
    local_back(next, "/")
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    error: Option<String>,
}

/// `GET /login`
pub async fn login_page(
    State(sessions): State<Sessions>,
    State(simulated): State<Simulated>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, WebError> {
    if sessions.auth.is_open() {
        return Ok(Redirect::to("/").into_response());
    }
    render(
        StatusCode::OK,
        &LoginPage {
            chrome: Chrome::anonymous(&simulated, "Log in"),
            next: local_path(q.next.as_deref()),
            error: None,
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /login`: a token in, a session cookie out.
pub async fn login(
    State(sessions): State<Sessions>,
    State(simulated): State<Simulated>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let Sessions {
        auth,
        store,
        dashboard,
    } = &sessions;
    if auth.is_open() {
        return Ok(Redirect::to("/").into_response());
    }
    let next = local_path(form.next.as_deref());
    // A login from another site is refused (login CSRF).
    check_origin(&headers, dashboard.public_origin.as_deref())?;
    // An address guessing tokens waits, whatever it presents now.
    if let Some(wait) = auth.throttle.waiting(peer) {
        tracing::warn!(peer = %peer_text(peer), wait_s = wait.as_secs(), "dashboard login refused: too many wrong tokens from this address");
        return Err(ApiError::throttled(wait).into());
    }
    let refused = |message: &str| {
        tracing::warn!(peer = %peer_text(peer), reason = message, "dashboard login refused");
        render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                chrome: Chrome::anonymous(&simulated, "Log in"),
                next: next.clone(),
                error: Some(message.into()),
            },
        )
    };
    let Some((name, digest, role)) = auth.login(form.token.trim()) else {
        if let Some(wait) = auth.throttle.failed(peer) {
            let page = refused("unknown token");
            // The page says what was wrong; the status and Retry-After, how long to wait.
            return page.map(|mut res| {
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                res.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    retry_after_secs(wait).into(),
                );
                res
            });
        }
        return refused("unknown token");
    };
    auth.throttle.succeeded(peer);
    if role == Role::Ingest {
        return refused(
            "an ingest token only posts alerts; log in with a viewer or operator token",
        );
    }
    let secret = random_secret()?;
    let ttl = dashboard.session_ttl;
    store
        .create_session(&id_hash(&secret), &name, &digest, ttl)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(token = %name, peer = %peer_text(peer), "dashboard login");
    let cookie = set_cookie(dashboard, &headers, SESSION_COOKIE, secret, Some(ttl));
    Ok((
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response())
}

/// `POST /logout`
pub async fn logout(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    if let Some(secret) = cookie_secret(&headers) {
        check_origin(&headers, sessions.dashboard.public_origin.as_deref())?;
        check_token(Some(&csrf_for(&secret)), &form.csrf)?;
        sessions
            .store
            .end_session(&id_hash(&secret))
            .await
            .map_err(ApiError::from)?;
    }
    let clear = set_cookie(
        &sessions.dashboard,
        &headers,
        SESSION_COOKIE,
        String::new(),
        None,
    );
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, clear),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response())
}
