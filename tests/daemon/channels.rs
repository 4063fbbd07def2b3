//! Notification channels at the edges: one that accepts connections and never answers
//! delays only itself — the page behind its messages goes out at once, the channel is
//! reported degraded, SIGTERM is not held up by it, and its messages are delivered after
//! a restart against an endpoint that works.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    helpers::{Daemon, Db, Options, Workspace},
    notify::Sink,
};

/// Accepts every connection and never answers (the sockets stay open until the test ends).
fn hung_endpoint() -> (u16, Arc<Mutex<Vec<std::net::TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            keep.lock().expect("held").push(conn);
        }
    });
    (port, held)
}

const TELL: &str = "fn run(event) { notify(event.params.channel, event.params.text) }\n";

fn options(chat_url: &str, pager_url: &str) -> Options {
    Options {
        extra_config: format!(
            "[notify]\ntimeout = \"2s\"\nmax_backoff = \"2s\"\ndegraded_after = 2\n\n\
             [channels.chat]\ntype = \"slack\"\nurl_env = \"CHAT_URL\"\n\n\
             [channels.pager]\ntype = \"pagerduty\"\nurl = \"{pager_url}\"\nrouting_key_env = \"PD_KEY\"\n"
        ),
        env: vec![
            ("CHAT_URL".into(), chat_url.into()),
            ("PD_KEY".into(), "pd-routing-key".into()),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_hung_channel_delays_only_itself_and_never_holds_up_a_shutdown() {
    let (hung, _held) = hung_endpoint();
    let pager = Sink::start(vec![]).await;
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tell", TELL);
    let opts = options(&format!("http://127.0.0.1:{hung}/"), &pager.url());
    let mut d = Daemon::start(&ws, &opts);
    for i in 0..20 {
        let (s, run) = d
            .run_wait(
                "tell",
                json!({"params": {"channel": "chat", "text": format!("chat {i}")}}),
            )
            .await;
        assert_eq!(s, 200, "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let paged = Instant::now();
    let (_, run) = d
        .run_wait(
            "tell",
            json!({"params": {"channel": "pager", "text": "P1: payments down"}}),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let got = pager.wait_for(1, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "the page waited behind the hung channel");
    let delay = got[0].0.duration_since(paged);
    println!("page delivered {delay:?} after it was queued behind 20 messages to a hung channel");
    assert!(delay < Duration::from_secs(2), "{delay:?}");

    // Two attempts of 2 s without an answer: the channel is degraded, and says so.
    let ready = d
        .poll("/readyz", Duration::from_secs(15), |v| {
            v["channels"]["chat"]
                .as_str()
                .is_some_and(|s| s.starts_with("degraded"))
        })
        .await;
    assert!(
        ready["channels"]["chat"]
            .as_str()
            .is_some_and(|s| s.contains("no answer within 2s")),
        "{ready}"
    );
    assert_eq!(ready["channels"]["pager"], "ok", "{ready}");
    assert_eq!(
        ready["status"], "ready",
        "a hung chat does not make runbookd unready"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(r#"runbookd_notification_channel_degraded{channel="chat"} 1"#),
        "{metrics}"
    );
    let page = reqwest::get(d.url("/")).await.expect("dashboard");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(r#"data-channel="chat""#),
        "dashboard names it"
    );

    // 20 more messages, then SIGTERM at once, while the hung channel holds an attempt: the
    // daemon exits within the shutdown grace (5 s in tests) plus a few seconds, leaving
    // what it could not send in the outbox.
    for i in 20..40 {
        let (_, run) = d
            .run_wait(
                "tell",
                json!({"params": {"channel": "chat", "text": format!("chat {i}")}}),
            )
            .await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let term = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(10));
    let took = term.elapsed();
    println!("SIGTERM with a hung channel: exited after {took:?}");
    assert!(status.success(), "{status:?}\n{}", d.logs());
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(d);

    // Nothing was lost: against a working endpoint, every chat message goes out, once.
    let chat = Sink::start(vec![]).await;
    let d = Daemon::start(&ws, &options(&chat.url(), &pager.url()));
    let got = chat.wait_for(40, Duration::from_secs(30)).await;
    let mut texts: Vec<String> = got
        .iter()
        .map(|(_, _, body)| body["text"].as_str().unwrap_or("").to_string())
        .collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 40, "{texts:?}\n{}", d.logs());
    let outbox = d
        .poll("/api/v1/notifications", Duration::from_secs(5), |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|n| n["status"] == "sent"))
        })
        .await;
    assert!(
        outbox
            .as_array()
            .is_some_and(|a| a.len() == 41 && a.iter().all(|n| n["status"] == "sent")),
        "{outbox}"
    );
    assert_eq!(pager.received().len(), 1, "the page went out once");
}
