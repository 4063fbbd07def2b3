//! The dashboard's second hardening pass, from outside: where a login and a decision send
//! the browser back to.

use serde_json::json;

use crate::{
    approvals::{pending, with_tokens, GATE},
    dashboard::{csrf_of, login, raw},
    helpers::{Daemon, Db, Workspace},
};

/// What a `next` or `back` field must not send a browser to (each one a browser reads as
/// another site, or that a parser could), and what it stays.
const ELSEWHERE: &[&str] = &[
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\x0b/evil.example",
    " /evil.example",
    "/ /evil.example",
    "//evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "/./\\evil.example",
    "/..//evil.example",
    "/.//evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "evil.example",
    "",
];

#[tokio::test]
async fn login_and_decisions_redirect_only_to_a_path_of_this_site() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    for next in ELSEWHERE {
        let r = raw()
            .post(d.url("/login"))
            .form(&[("token", "bob-secret"), ("next", next)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/", "login with next = {next:?}");
    }
    for (next, to) in [
        ("/incidents/abc?tab=1", "/incidents/abc?tab=1"),
        ("/runs/x#logs", "/runs/x#logs"),
        ("/approvals/../playbooks", "/playbooks"),
    ] {
        let r = raw()
            .post(d.url("/login"))
            .form(&[("token", "bob-secret"), ("next", next)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.headers()["location"], to, "login with next = {next:?}");
    }
    // The login page's own form carries only a local path.
    let html = raw()
        .get(d.url("/login?next=%2F%09%2Fevil.example"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(!html.contains("evil.example"), "{html}");

    let (_, cookie) = login(&d, "bob-secret").await;
    let csrf = csrf_of(&d, &cookie, "/approvals").await;
    for back in ELSEWHERE.iter().chain(&["/playbooks"]) {
        let (_, run) = d.run_wait("gate", json!({})).await;
        assert_eq!(run["status"], "awaiting_approval", "{run}");
        let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
        let r = raw()
            .post(d.url(&format!("/approvals/{id}/deny")))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("back", back)])
            .send()
            .await
            .expect("deny");
        assert_eq!(r.status().as_u16(), 303, "{back:?}");
        let want = if *back == "/playbooks" {
            "/playbooks"
        } else {
            "/approvals"
        };
        assert_eq!(r.headers()["location"], want, "deny with back = {back:?}");
    }
}
