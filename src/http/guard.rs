//! With no tokens configured runbookd serves loopback only — which a web page in the
//! operator's browser can still reach. This guard keeps pages from driving or reading it:
//! - a `Host` that is not a loopback name or the listen address is refused (421), which
//!   defeats DNS rebinding (`evil.example` resolving to 127.0.0.1);
//! - a foreign `Origin` is refused (403): a cross-site `fetch` or form post always sends one;
//! - a mutating API request must be `Content-Type: application/json` (415), which no page
//!   can send cross-site without a CORS preflight that runbookd never grants. A bodiless
//!   POST without `Origin` or `Content-Type` — `curl -XPOST` — is let through. The
//!   dashboard's own forms (outside `/api/`) carry a CSRF token instead (`super::session`).
//!
//! With tokens configured the guard does nothing: a page cannot learn a bearer token.

use std::net::SocketAddr;

use axum::{
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::error::ApiError;

/// What the guard compares against.
#[derive(Debug, Clone, Copy)]
pub struct BrowserGuard {
    /// The address runbookd listens on (its IP is an accepted host too).
    pub listen: SocketAddr,
}

/// The host part of a `Host` or `Origin` authority (`[::1]:8765` → `::1`).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            authority
        }
    })
}

impl BrowserGuard {
    /// A host this daemon answers to: a loopback name or address, or the listen IP.
    fn local_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.listen.ip(),
            Err(_) => false,
        }
    }

    fn check(&self, req: &Request) -> Result<(), ApiError> {
        // Slack posts a form, signed: no page can forge the signature.
        if req.uri().path() == "/api/v1/slack/interactions" {
            return Ok(());
        }
        if let Some(host) = req.headers().get(header::HOST) {
            let host = host.to_str().unwrap_or("");
            if !self.local_host(host_of(host)) {
                return Err(ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "runbookd without API tokens answers only to loopback hosts, not `{host}`"
                    ),
                ));
            }
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let authority = origin.split("://").nth(1).unwrap_or("");
            if origin == "null" || !self.local_host(host_of(authority)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("requests from web pages (Origin `{origin}`) are refused without API tokens"),
                ));
            }
        }
        let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        // The dashboard's forms (outside /api) are checked by their CSRF token instead.
        if mutating && req.uri().path().starts_with("/api/") {
            let content_type = req.headers().get(header::CONTENT_TYPE);
            let json = content_type
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            let bodiless = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|l| l.as_bytes() == b"0")
                && !req.headers().contains_key(header::TRANSFER_ENCODING);
            let curl_like =
                content_type.is_none() && bodiless && !req.headers().contains_key(header::ORIGIN);
            if !json && !curl_like {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send Content-Type: application/json",
                ));
            }
        }
        Ok(())
    }
}

/// The middleware: refuses what [`BrowserGuard`] refuses, passes the rest on.
pub async fn guard(State(g): State<BrowserGuard>, req: Request, next: Next) -> Response {
    match g.check(&req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri("/api/v1/runs");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(e) => e.into_response().status().as_u16(),
        }
    }

    #[test]
    fn pages_cannot_drive_a_tokenless_daemon() {
        let g = BrowserGuard {
            listen: "127.0.0.1:8765".parse().expect("addr"),
        };
        assert_eq!(
            status(g.check(&req("GET", &[("host", "127.0.0.1:8765")]))),
            200
        );
        assert_eq!(status(g.check(&req("GET", &[("host", "localhost")]))), 200);
        assert_eq!(status(g.check(&req("GET", &[("host", "[::1]:8765")]))), 200);
        assert_eq!(
            status(g.check(&req("GET", &[("host", "evil.example")]))),
            421
        );
        assert_eq!(
            status(g.check(&req("GET", &[("host", "127.0.0.1.evil.example:8765")]))),
            421
        );
        let post = |h: &[(&str, &str)]| status(g.check(&req("POST", h)));
        assert_eq!(
            post(&[
                ("content-type", "application/json"),
                ("content-length", "2")
            ]),
            200
        );
        assert_eq!(post(&[]), 200, "curl -XPOST");
        assert_eq!(
            post(&[("content-type", "text/plain"), ("content-length", "2")]),
            415
        );
        assert_eq!(post(&[("content-length", "2")]), 415);
        assert_eq!(
            post(&[
                ("origin", "https://evil.example"),
                ("content-type", "application/json")
            ]),
            403
        );
        assert_eq!(post(&[("origin", "null")]), 403);
        assert_eq!(
            post(&[
                ("origin", "http://127.0.0.1:8765"),
                ("content-type", "application/json")
            ]),
            200
        );
        assert_eq!(
            post(&[("origin", "http://127.0.0.1:8765")]),
            415,
            "a page's bodiless POST"
        );
    }
}
