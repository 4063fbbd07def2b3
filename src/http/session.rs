//! A browser's session and its forms' honesty: the cookies and CSRF tokens both faces
//! check (the login and logout pages themselves are the dashboard's, `web::login`).
//!
//! - `/login` takes an API token once and sets `runbookd_session`: a random secret (256
//!   bits), `HttpOnly`, `SameSite=Strict`, `Path=/`, expiring after `[dashboard]
//!   session_ttl`, `Secure` behind TLS. The store keeps only its SHA-256 (see
//!   `store::sessions`).
//! - Every form carries a CSRF token: with a session, an HMAC of the session secret (so it
//!   needs no storage and dies with the session); without tokens (loopback), a random
//!   `runbookd_csrf` cookie the form must repeat (double submit). A foreign `Origin` is
//!   refused before either is looked at.

use axum::http::{header, HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{caller::Caller, error::ApiError};
use crate::config::{DashboardConfig, SecureCookies};

pub const SESSION_COOKIE: &str = "runbookd_session";
pub const CSRF_COOKIE: &str = "runbookd_csrf";

/// A random secret: 32 bytes, URL-safe base64.
pub fn random_secret() -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a session: {e}"),
        )
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The value of cookie `name`, from every `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && !c.value().is_empty())
        .map(|c| c.value().to_string())
}

/// The session cookie's secret, if the browser sent one.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// What the store keeps of a session secret.
pub fn id_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The CSRF token of a session.
pub fn csrf_for(secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"runbookd dashboard csrf");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether cookies set in answer to this request carry `Secure`.
fn secure(dashboard: &DashboardConfig, headers: &HeaderMap) -> bool {
    match dashboard.secure_cookies {
        SecureCookies::Always => true,
        SecureCookies::Never => false,
        SecureCookies::Auto => headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https")),
    }
}

/// A `Set-Cookie` value: `max_age` None removes the cookie.
pub fn set_cookie(
    dashboard: &DashboardConfig,
    headers: &HeaderMap,
    name: &'static str,
    value: String,
    max_age: Option<std::time::Duration>,
) -> String {
    let mut c = cookie::Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure(dashboard, headers));
    c = match max_age {
        Some(age) => c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64)),
        None => c.max_age(cookie::time::Duration::ZERO),
    };
    c.build().to_string()
}

/// The CSRF token forms on this page carry, and the cookie to set when the browser has
/// none yet (a daemon without tokens).
pub fn page_csrf(
    dashboard: &DashboardConfig,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(String, Option<String>), ApiError> {
    if let Some(token) = &caller.session_csrf {
        return Ok((token.clone(), None));
    }
    match cookie(headers, CSRF_COOKIE) {
        Some(token) => Ok((token, None)),
        None => {
            let token = random_secret()?;
            let set = set_cookie(dashboard, headers, CSRF_COOKIE, token.clone(), None)
                .replace("Max-Age=0", "Max-Age=31536000");
            Ok((token, Some(set)))
        }
    }
}

/// Refuses a post whose `Origin` is another site's: this site is the request's `Host`, or
/// `[dashboard] public_origin` (behind a proxy that rewrites `Host`).
pub fn check_origin(headers: &HeaderMap, public_origin: Option<&str>) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        if public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
            return Ok(());
        }
        let Some(host) = headers.get(header::HOST) else {
            return Ok(());
        };
        let authority = origin.split("://").nth(1).unwrap_or("");
        if authority.as_bytes() != host.as_bytes() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("a form from another site (Origin `{origin}`) is refused"),
            ));
        }
    }
    Ok(())
}

/// Refuses a CSRF token that is not `expected`.
pub fn check_token(expected: Option<&str>, presented: &str) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the form has no CSRF cookie to match; reload the page and try again",
        ));
    };
    if presented.is_empty() || !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match this session; reload the page and try again",
        ));
    }
    Ok(())
}

/// Refuses a form post that another site could have made.
pub fn check_form(
    caller: &Caller,
    headers: &HeaderMap,
    presented: &str,
    public_origin: Option<&str>,
) -> Result<(), ApiError> {
    check_origin(headers, public_origin)?;
    match &caller.session_csrf {
        Some(token) => check_token(Some(token), presented),
        // A bearer token is no ambient authority: no page can send it.
        None if caller.identified() => Ok(()),
        None => check_token(cookie(headers, CSRF_COOKIE).as_deref(), presented),
    }
}

/// `path` if it is a path of this site, else `default` (a form's `back` field cannot send
/// the browser elsewhere). Browsers drop tabs and newlines from a `Location` and read `\\`
/// as `/`, so `/\t/evil.example` or `/\\evil.example` is another site to them: a path is
/// taken only with no control character or whitespace at all, and only if, parsed against
/// this site and normalised (dot segments, backslashes), it is still a path of this site
/// that does not start with `//`. What is returned is the normalised path.
pub fn local_back(path: Option<&str>, default: &str) -> String {
    local_path_of(path).unwrap_or_else(|| default.into())
}

fn local_path_of(path: Option<&str>) -> Option<String> {
    let p = path?;
    if !p.starts_with('/') || p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let p = p.replace('\\', "/");
    if p.starts_with("//") {
        return None;
    }
    let base = url::Url::parse("http://runbookd.invalid/").ok()?;
    let parsed = base.join(&p).ok()?;
    if parsed.origin() != base.origin() {
        return None;
    }
    let mut out = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = parsed.fragment() {
        out.push('#');
        out.push_str(f);
    }
    (out.starts_with('/') && !out.starts_with("//") && !out.contains('\\')).then_some(out)
}
