//! The dashboard: server-rendered pages at `/` for the SRE who opens a laptop at 3 a.m.
//!
//! One face of the HTTP shell ([`crate::http`]), beside the API. Pages are askama templates
//! (`templates/`, compiled into the binary with the CSS and JavaScript of `assets/`). They
//! read the same store and do what the API does through the same actions — acknowledging
//! from a page is `http::actions::Actions::acknowledge`, approving is `Actions::decide` —
//! and they work with JavaScript off. With it on,
//! `dashboard.js` follows `GET /api/v1/events` and swaps the page's `<main>` when
//! something it shows changed, and submits forms without a reload.
//!
//! Request flow: [`Viewer`] authenticates (session cookie, bearer token, or the local
//! operator) → a page module reads the store → [`render`]. Forms post to the page's own
//! URL plus a verb, carry a CSRF token (`http::session::check_form`) and answer `303 See
//! Other` back to the page.

mod approvals;
mod incident;
mod login;
mod overview;
mod pages;
mod playbooks;
mod run;

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts, Path},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};

use crate::http::{
    auth::authenticate,
    caller::Caller,
    error::ApiError,
    session,
    state::{AppState, Sessions, Simulated},
};

/// The dashboard's routes (merged by the shell under its limits and layers).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/incidents/{id}", get(incident::page))
        .route("/incidents/{id}/ack", post(incident::ack))
        .route("/incidents/{id}/resolve", post(incident::resolve))
        .route("/runs/{id}", get(run::page))
        .route("/playbooks", get(playbooks::page))
        .route("/playbooks/{name}/run", post(playbooks::run))
        .route("/approvals", get(approvals::page))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/assets/{file}", get(asset))
}

/// An error on a page: the same message as the API's, as HTML.
#[derive(Debug)]
pub struct WebError(ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> WebError {
        WebError(e)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        WebError(e.into())
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: pages::Chrome,
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let retry_after = self.0.retry_after;
        let page = ErrorPage {
            chrome: pages::Chrome::bare("Error"),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_string(),
            message: self.0.message,
        };
        let mut res = match askama::Template::render(&page) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// A page's HTML with `status`.
fn render(status: StatusCode, page: &impl askama::Template) -> Result<Response, WebError> {
    let html = page.render().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page did not render: {e}"),
        )
    })?;
    let mut res = (status, Html(html)).into_response();
    let h = res.headers_mut();
    // Pages are never cached (they are live) and never framed (clickjacking).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    Ok(res)
}

/// Who is looking, and the CSRF token their forms carry. Without a valid login on a daemon
/// with tokens, pages redirect to `/login` (and come back afterwards).
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
    /// A `runbookd_csrf` cookie to set (daemon without tokens, first visit).
    pub set_cookie: Option<String>,
    /// `[dashboard] public_origin`: a form's `Origin` that is this site's.
    pub public_origin: Option<String>,
    /// `serve --world`: the scenario's title, on every page.
    pub simulated: Option<Arc<str>>,
    /// The daemon has no tokens.
    pub open: bool,
}

impl<S> FromRequestParts<S> for Viewer
where
    S: Send + Sync,
    Sessions: FromRef<S>,
    Simulated: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let sessions = Sessions::from_ref(state);
        let caller = match authenticate(parts, &sessions.auth, &sessions.store).await {
            Ok(c) => c,
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                // A form posted after the session expired returns to its page.
                let back = if parts.method == axum::http::Method::GET {
                    here.to_string()
                } else {
                    here.rsplit_once('/').map_or("/", |(p, _)| p).to_string()
                };
                let next =
                    url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>();
                return Err(Redirect::to(&format!("/login?next={next}")).into_response());
            }
            Err(e) => return Err(WebError(e).into_response()),
        };
        let (csrf, set_cookie) = session::page_csrf(&sessions.dashboard, &caller, &parts.headers)
            .map_err(|e| WebError(e).into_response())?;
        Ok(Viewer {
            caller,
            csrf,
            set_cookie,
            public_origin: sessions.dashboard.public_origin.clone(),
            simulated: Simulated::from_ref(state).0,
            open: sessions.auth.is_open(),
        })
    }
}

impl Viewer {
    /// `render`, plus the CSRF cookie on a first visit.
    fn render(&self, page: &impl askama::Template) -> Result<Response, WebError> {
        let mut res = render(StatusCode::OK, page)?;
        if let Some(c) = &self.set_cookie {
            if let Ok(v) = HeaderValue::from_str(c) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        Ok(res)
    }

    /// Checks a form's CSRF token and origin.
    fn check(&self, headers: &HeaderMap, csrf: &str) -> Result<(), WebError> {
        Ok(session::check_form(
            &self.caller,
            headers,
            csrf,
            self.public_origin.as_deref(),
        )?)
    }
}

/// A form that carries nothing but its CSRF token (acknowledge, resolve, log out).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Back to a page after a form: `303 See Other`.
fn back_to(path: &str) -> Response {
    Redirect::to(path).into_response()
}

const CSS: &str = include_str!("../../assets/dashboard.css");
const JS: &str = include_str!("../../assets/dashboard.js");

/// `GET /assets/{file}`: the stylesheet and script, embedded in the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return WebError(ApiError::not_found("no such asset")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
