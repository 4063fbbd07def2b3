//! The dashboard over plain HTTP: what a login is (a session cookie that reads the API and
//! drives only the dashboard's CSRF-checked forms), forged and cross-site posts refused,
//! logout, the live event stream (and a SIGTERM while it is open), escaping of what
//! playbooks and alerts write, and a daemon without tokens.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::{
    approvals::with_tokens,
    helpers::{Daemon, Db, Options, Workspace},
    outage::{alert_now, post_alert},
};

const HELLO: &str = r#"
fn run(event) { log("hello"); #{ ok: true } }
"#;

/// A client that keeps no cookies and follows no redirects: every header is the test's.
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in with `token`: the `Set-Cookie` header and the cookie pair to send back.
pub async fn login(d: &Daemon, token: &str) -> (String, String) {
    let r = raw()
        .post(d.url("/login"))
        .form(&[("token", token), ("next", "/playbooks")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303, "login answers See Other");
    assert_eq!(r.headers()["location"], "/playbooks");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    let pair = set.split(';').next().expect("pair").to_string();
    (set, pair)
}

/// The CSRF token of the page at `path` (from its logout form or any form).
pub async fn csrf_of(d: &Daemon, cookie: &str, path: &str) -> String {
    let html = raw()
        .get(d.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

#[tokio::test]
async fn a_login_reads_the_api_but_only_its_forms_act() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("hello", HELLO);
    let mut opts = with_tokens("");
    opts.extra_config
        .push_str("\n[[server.tokens]]\nname = \"am\"\ntoken_env = \"T_AM\"\nrole = \"ingest\"\n");
    opts.env.push(("T_AM".into(), "am-secret".into()));
    let d = Daemon::start(&ws, &opts);
    let http = raw();

    // Not logged in: pages send to /login and come back; the API says 401.
    let r = http.get(d.url("/playbooks")).send().await.expect("page");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login?next=%2Fplaybooks");
    // Wrong and ingest tokens are refused with the reason, on the login page.
    for (token, says) in [
        ("nope", "unknown token"),
        ("am-secret", "ingest token only posts alerts"),
    ] {
        let r = http
            .post(d.url("/login"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().get("set-cookie").is_none());
        assert!(r.text().await.expect("html").contains(says));
    }
    // A login posted from another site is refused (login CSRF).
    let r = http
        .post(d.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[("token", "alice-secret")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 403);

    let (set, cookie) = login(&d, "alice-secret").await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let r = http
        .post(d.url("/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", "alice-secret")])
        .send()
        .await
        .expect("login behind TLS");
    assert!(r.headers()["set-cookie"]
        .to_str()
        .expect("c")
        .contains("Secure"));
    // Nothing secret in the store's view of it or on the page.
    let page = http
        .get(d.url("/playbooks"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("frame-ancestors 'none'"));
    let html = page.text().await.expect("html");
    assert!(html.contains("alice (operator)"), "who is logged in");
    assert!(
        !html.contains("alice-secret") && !html.contains(cookie.split('=').nth(1).unwrap_or("-"))
    );

    // The session reads the API…
    let r = http
        .get(d.url("/api/v1/playbooks"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("api read");
    assert_eq!(r.status().as_u16(), 200);
    // …but does not drive it: the API's actions take a bearer token.
    let r = http
        .post(d.url("/api/v1/playbooks/hello/runs"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("api post");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.expect("body").contains("only reads the API"));

    // The dashboard's form: refused without the CSRF token, with another session's, or from
    // another site; taken with it.
    let csrf = csrf_of(&d, &cookie, "/playbooks").await;
    let (_, other_cookie) = login(&d, "bob-secret").await;
    let other_csrf = csrf_of(&d, &other_cookie, "/playbooks").await;
    assert_ne!(csrf, other_csrf);
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut r = http
            .post(d.url("/playbooks/hello/run"))
            .header("cookie", &cookie)
            .form(&form);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = post(vec![("mode", "dry".into())], None)
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403, "no CSRF token");
    let r = post(vec![("mode", "dry".into()), ("csrf", other_csrf)], None)
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403, "another session's token");
    let r = post(
        vec![("mode", "dry".into()), ("csrf", csrf.clone())],
        Some("https://evil.example"),
    )
    .await
    .expect("post");
    assert_eq!(r.status().as_u16(), 403, "another site");
    // A real run without the confirmation box: refused, nothing started.
    let r = post(vec![("mode", "real".into()), ("csrf", csrf.clone())], None)
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.expect("html").contains("confirm"));
    let (_, runs) = d.get("/api/v1/runs").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    // The dry run: started, by alice, and the answer goes to its page.
    let r = post(
        vec![
            ("mode", "dry".into()),
            ("csrf", csrf.clone()),
            ("params", "{\"why\": \"check\"}".into()),
        ],
        None,
    )
    .await
    .expect("post");
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().expect("loc").to_string();
    let id = to.strip_prefix("/runs/").expect("a run page").to_string();
    let run = crate::approvals::finished(&d, &id).await;
    assert_eq!(run["dry_run"], true, "{run}");
    assert_eq!(run["trigger"]["actor"], "alice", "{run}");
    assert_eq!(run["event"]["params"]["why"], "check", "{run}");

    // Logout ends the session here and everywhere.
    let r = http
        .post(d.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .expect("c")
        .contains("Max-Age=0"));
    let r = http
        .get(d.url("/api/v1/playbooks"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("after logout");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(d.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page after logout");
    assert_eq!(r.status().as_u16(), 303, "back to the login");
}

/// An SSE stream read by the test: events kept in arrival order until a wait takes them
/// (one poll of the feed can carry several changes, in any order).
struct Events<S> {
    stream: S,
    buf: String,
    seen: Vec<(String, Value)>,
}

impl<S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> Events<S> {
    /// Waits for an event named `name` whose data satisfies `pred`.
    async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                self.seen
                    .push((event, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
            if let Some(i) = self.seen.iter().position(|(n, v)| n == name && pred(v)) {
                return self.seen.remove(i).1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!("no `{name}` event: {other:?}; seen: {:?}", self.seen),
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_tells_changes_and_does_not_hold_up_a_shutdown() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("hello", HELLO);
    ws.write_playbook(
        "gate",
        r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) { if !approved(#{ action: "breaker.reset", target: "stripe", reason: "stuck" }) { return "asked"; } "done" }
"#,
    );
    let mut opts = with_tokens("");
    opts.extra_config
        .push_str("\n[dashboard]\nlive_interval = \"200ms\"\n");
    let mut d = Daemon::start(&ws, &opts);
    // Viewers may watch; nobody without a token may.
    let r = raw()
        .get(d.url("/api/v1/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(r.status().as_u16(), 401);
    let r = raw()
        .get(d.url("/api/v1/events"))
        .bearer_auth("carol-secret")
        .send()
        .await
        .expect("events");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = Events {
        stream: r.bytes_stream(),
        buf: String::new(),
        seen: Vec::new(),
    };
    events.until("ready", |_| true).await;

    let id = d.start_run("hello", json!({})).await;
    let run = events
        .until("run", |v| {
            v["id"] == json!(id) && v["status"] == "succeeded"
        })
        .await;
    assert_eq!(run["type"], "run");
    assert_eq!(run["playbook"], "hello");

    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-sse", "firing")).await;
    let incident = events.until("incident", |v| v["status"] == "open").await;
    assert!(incident["title"]
        .as_str()
        .unwrap_or("")
        .contains("PaymentProcessorDown"));
    let approval = events.until("approval", |v| v["status"] == "pending").await;
    assert_eq!(approval["action"], "breaker.reset");
    assert_eq!(approval["target"], "stripe");

    // SIGTERM with the stream open: the stream ends and the daemon exits within its grace,
    // not after the HTTP drain gives up on a connection that never ends.
    let stopped = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", d.logs());
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "took {:?}: the open stream held the shutdown",
        stopped.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = events.stream.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the daemon");
    assert!(
        !d.logs().contains("HTTP connections still open"),
        "{}",
        d.logs()
    );
}

#[tokio::test]
async fn pages_escape_what_playbooks_and_alerts_write() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "hostile",
        r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) {
    let n = setting("<img src=x onerror=alert(1)>", 1);
    log("<img src=x onerror=alert(1)>");
    set_fact("summary", "<script>alert('summary')</script>");
    throw "<b>boom</b>";
}
"#,
    );
    ws.write_playbook("broken", "fn run(event) { let x = ; }");
    let d = Daemon::start(&ws, &Options::default());
    let mut alert = alert_now("PaymentProcessorDown", "fp-xss", "firing");
    alert["alerts"][0]["annotations"]["summary"] = json!("<svg onload=alert(2)>");
    post_alert(&d, &alert).await;
    let runs = d
        .poll(
            "/api/v1/runs?playbook=hostile",
            Duration::from_secs(15),
            |v| v[0]["status"] == "failed",
        )
        .await;
    let run = runs[0]["id"].as_str().expect("run").to_string();
    let incident = d.get("/api/v1/incidents").await.1[0]["id"]
        .as_str()
        .expect("incident")
        .to_string();
    let http = raw();
    for path in [
        "/".to_string(),
        format!("/incidents/{incident}"),
        format!("/runs/{run}"),
        "/playbooks".into(),
    ] {
        let html = http
            .get(d.url(&path))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        for raw in ["<img src=x", "<script>alert", "<svg onload", "<b>boom"] {
            assert!(!html.contains(raw), "{path} renders `{raw}` unescaped");
        }
        if path.starts_with("/runs/") {
            // Shown, as text (askama writes `<` as `&#60;`).
            let text = html
                .replace("&#60;", "<")
                .replace("&#62;", ">")
                .replace("&#34;", "\"");
            assert!(
                text.contains("<img src=x onerror=alert(1)>"),
                "{path}: the log line"
            );
            assert!(text.contains("<b>boom</b>"), "{path}: the error");
            // The flight recording: the read as the playbook wrote it, escaped, and the
            // command that replays the run.
            assert!(
                text.contains(r#"setting("<img src=x onerror=alert(1)>", 1)"#),
                "{path}: the recorded read"
            );
            assert!(
                text.contains(&format!("runbookd replay {run} --playbooks playbooks/")),
                "{path}: the replay command"
            );
        }
        if path == "/playbooks" {
            // The load error, with file:line:col.
            assert!(html.contains("broken.rhai:1:"), "{html}");
        }
    }
}

#[tokio::test]
async fn a_tokenless_dashboard_takes_forms_only_with_its_csrf_cookie() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("hello", HELLO);
    let d = Daemon::start(&ws, &Options::default());
    let http = raw();
    let r = http.get(d.url("/")).send().await.expect("overview");
    assert_eq!(r.status().as_u16(), 200, "open, like the API");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("csrf cookie")
        .to_string();
    assert!(
        set.starts_with("runbookd_csrf=") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("pair").to_string();
    let token = cookie.split('=').nth(1).expect("value").to_string();
    let html = r.text().await.expect("html");
    assert!(html.contains("local operator (no tokens)"));
    // A page elsewhere cannot post the form: no cookie to match, or a foreign Origin.
    let r = http
        .post(d.url("/playbooks/hello/run"))
        .form(&[("mode", "dry"), ("csrf", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403, "no cookie");
    let r = http
        .post(d.url("/playbooks/hello/run"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("mode", "dry"), ("csrf", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403, "foreign origin");
    let r = http
        .get(d.url("/"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("rebinding");
    assert_eq!(r.status().as_u16(), 421, "DNS rebinding");
    let r = http
        .post(d.url("/playbooks/hello/run"))
        .header("cookie", &cookie)
        .header("origin", d.url(""))
        .form(&[("mode", "dry"), ("csrf", token.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 303, "{:?}", r.text().await);
    // The login page does not exist without tokens.
    let r = http.get(d.url("/login")).send().await.expect("login");
    assert_eq!(r.status().as_u16(), 303);
}
