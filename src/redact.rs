//! Secrets out of what runbookd prints: URLs for logs and error messages.

/// Query parameters whose values are secrets (libpq's `password`, Redis's `token`, …).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "secret",
    "sslpassword",
    "api_key",
    "apikey",
    "auth",
];

/// A URL for logs and error messages: the userinfo password and secret query parameters
/// replaced by `***`. Parsed, not pattern-matched; what does not parse as a URL is not
/// shown at all.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<a URL that does not parse>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/pay"),
            "postgres://app:***@db:5432/pay"
        );
        assert_eq!(redact_url("sqlite://runbookd.db"), "sqlite://runbookd.db");
        assert_eq!(redact_url("postgres://app@db/pay"), "postgres://app@db/pay");
        assert_eq!(
            redact_url("postgres://db/pay?user=app&password=s3cret&sslmode=require"),
            "postgres://db/pay?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/0?Token=abc"),
            "redis://:***@cache:6379/0?Token=***"
        );
        assert!(!redact_url("not a url s3cret").contains("s3cret"));
    }
}
