//! Notifications to real HTTP sinks: Slack, PagerDuty, signed webhooks; retries, Retry-After,
//! giving up, and an outbox that survives a restart.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
    Router,
};
use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

#[derive(Default)]
pub struct SinkState {
    /// Statuses to answer with first (then 200); (status, Retry-After).
    pub script: VecDeque<(u16, Option<u64>)>,
    pub received: Vec<(Instant, HeaderMap, Value)>,
    pub raw: Vec<Bytes>,
    /// How long each answer takes (a slow receiver).
    pub delay: Duration,
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SinkState>>,
}

async fn receive(
    State(s): State<Arc<Mutex<SinkState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let delay = s.lock().expect("sink").delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = s.lock().expect("sink");
    let (status, retry_after) = st.script.pop_front().unwrap_or((200, None));
    st.received.push((
        Instant::now(),
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    st.raw.push(body);
    let mut h = HeaderMap::new();
    if let Some(r) = retry_after {
        h.insert("retry-after", r.to_string().parse().expect("header"));
    }
    (StatusCode::from_u16(status).expect("status"), h, "ok")
}

impl Sink {
    pub async fn start(script: Vec<(u16, Option<u64>)>) -> Sink {
        let state = Arc::new(Mutex::new(SinkState {
            script: script.into(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/", post(receive))
            .with_state(state.clone());
        let addr = crate::helpers::serve_on_loopback(app).await;
        Sink { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn received(&self) -> Vec<(Instant, HeaderMap, Value)> {
        self.state.lock().expect("sink").received.clone()
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<(Instant, HeaderMap, Value)> {
        let start = Instant::now();
        loop {
            let r = self.received();
            if r.len() >= n || start.elapsed() > timeout {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const NOTIFY: &str =
    "fn run(event) { notify(event.params.channel, \"Stripe degraded: breaker open 142 s\") }\n";

#[tokio::test]
async fn slack_pagerduty_and_signed_webhook_receive_the_message() {
    let (slack, pd, hook) = (
        Sink::start(vec![]).await,
        Sink::start(vec![]).await,
        Sink::start(vec![]).await,
    );
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tell", NOTIFY);
    let config = format!(
        "[channels.oncall]\ntype = \"slack\"\nurl_env = \"SLACK_URL\"\n\
         [channels.pager]\ntype = \"pagerduty\"\nurl = \"{}\"\nrouting_key_env = \"PD_KEY\"\n\
         [channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\n\
         [channels.journal]\ntype = \"log\"\n",
        pd.url(),
        hook.url()
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: config,
            env: vec![
                ("SLACK_URL".into(), slack.url()),
                ("PD_KEY".into(), "pd-routing-key-secret".into()),
                ("HOOK_SECRET".into(), "whsec_hook_secret".into()),
            ],
        },
    );
    for ch in ["oncall", "pager", "hook", "journal"] {
        let (_, run) = d.run_wait("tell", json!({"params": {"channel": ch}})).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["actions"][0]["action"], "notify");
    }
    let s = slack.wait_for(1, Duration::from_secs(5)).await;
    assert!(
        s[0].2["text"]
            .as_str()
            .unwrap_or("")
            .contains("Stripe degraded"),
        "{:?}",
        s[0].2
    );
    let p = pd.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(p[0].2["routing_key"], "pd-routing-key-secret");
    assert_eq!(p[0].2["event_action"], "trigger");
    assert_eq!(p[0].2["payload"]["source"], "runbookd");
    let h = hook.wait_for(1, Duration::from_secs(5)).await;
    let sig = h[0]
        .1
        .get("runbookd-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed")
        .to_string();
    let body = hook.state.lock().expect("sink").raw[0].clone();
    // The receiver can verify it exactly as a Stripe webhook.
    let t: i64 = sig
        .split(',')
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t");
    runbookd::primitives::webhooks::verify_signature(
        &body,
        &sig,
        b"whsec_hook_secret",
        Duration::from_secs(300),
        t,
    )
    .expect("signature verifies");
    // Redeliveries carry the same id, in the body and as Idempotency-Key.
    let key = h[0]
        .1
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .expect("idempotency key")
        .to_string();
    assert_eq!(
        h[0].2["id"],
        key.as_str(),
        "the body names the same notification"
    );
    let outbox = d
        .poll("/api/v1/notifications", Duration::from_secs(5), |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 4 && a.iter().all(|n| n["status"] == "sent"))
        })
        .await;
    assert!(
        outbox
            .as_array()
            .is_some_and(|a| a.iter().all(|n| n["status"] == "sent")),
        "{outbox}"
    );
    assert!(
        outbox
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["id"] == key.as_str())),
        "the key is the outbox notification's id: {outbox}"
    );
    assert!(
        d.logs().contains("NOTIFY runbookd: tell"),
        "the log channel writes to the log"
    );
    let logs = d.logs();
    for secret in ["pd-routing-key-secret", "whsec_hook_secret", &slack.url()] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
    let (_, unknown) = d
        .run_wait("tell", json!({"params": {"channel": "nope"}}))
        .await;
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no channel named `nope`"),
        "{unknown}"
    );
    let (_, dry) = d
        .run_wait(
            "tell",
            json!({"params": {"channel": "oncall"}, "dry_run": true}),
        )
        .await;
    assert_eq!(dry["actions"][0]["outcome"], "planned");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack.received().len(), 1, "a dry run sends nothing");
}

#[tokio::test]
async fn failed_deliveries_retry_honour_retry_after_and_give_up() {
    let flaky = Sink::start(vec![(500, None), (429, Some(2))]).await;
    let dead = Sink::start(vec![(503, None); 100]).await;
    let rejecting = Sink::start(vec![(400, None)]).await;
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tell", NOTIFY);
    let config = format!(
        "[channels.flaky]\ntype = \"webhook\"\nurl = \"{}\"\n[channels.dead]\ntype = \"webhook\"\nurl = \"{}\"\n\
         [channels.rejecting]\ntype = \"webhook\"\nurl = \"{}\"\n[notify]\ngive_up_after = \"2s\"\nmax_backoff = \"5s\"\n",
        flaky.url(),
        dead.url(),
        rejecting.url()
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: config,
            env: vec![],
        },
    );
    for ch in ["flaky", "dead", "rejecting"] {
        d.run_wait("tell", json!({"params": {"channel": ch}})).await;
    }
    let got = flaky.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "500, then 429, then delivered");
    let waited = got[2].0 - got[1].0;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {waited:?}"
    );
    let outbox = d
        .poll("/api/v1/notifications", Duration::from_secs(10), |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|n| n["status"] != "pending"))
        })
        .await;
    let by_channel = |c: &str| {
        outbox
            .as_array()
            .expect("outbox")
            .iter()
            .find(|n| n["channel"] == c)
            .cloned()
            .expect("item")
    };
    assert_eq!(by_channel("flaky")["status"], "sent");
    assert_eq!(
        by_channel("dead")["status"],
        "failed",
        "given up after 2 s: {outbox}"
    );
    assert!(by_channel("dead")["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("503"));
    assert_eq!(
        by_channel("rejecting")["status"],
        "failed",
        "a 400 is not retried"
    );
    assert_eq!(rejecting.received().len(), 1);
    // The counter is raised after the outbox row is marked sent.
    let sent = r#"runbookd_notifications_total{channel="flaky",outcome="sent"} 1"#;
    let metrics = d.metrics_holding(sent, Duration::from_secs(5)).await;
    assert!(metrics.contains(sent), "{metrics}");
}

#[tokio::test]
async fn queued_notifications_survive_a_restart() {
    // The sink is down while the notification is queued; it is delivered after a restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tell", NOTIFY);
    let config =
        format!("[channels.later]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n");
    let opts = Options {
        bearer: None,
        serve_args: Vec::new(),
        extra_config: config,
        env: vec![],
    };
    let mut d = Daemon::start(&ws, &opts);
    d.run_wait("tell", json!({"params": {"channel": "later"}}))
        .await;
    // Killed between attempts, not while it holds the notification for one (a sender that
    // dies mid-attempt leaves its claim to expire: timeout + 30 s): the first attempt has
    // failed and the next is a second away.
    d.poll("/api/v1/notifications", Duration::from_secs(10), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|n| n["attempts"].as_i64() >= Some(1)))
    })
    .await;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    drop(d);
    let state = Arc::new(Mutex::new(SinkState::default()));
    let app = Router::new()
        .route("/", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let _d = Daemon::start(&ws, &opts);
    let start = Instant::now();
    while state.lock().expect("sink").received.is_empty()
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        state.lock().expect("sink").received.len(),
        1,
        "delivered once after the restart"
    );
}

/// A minimal SMTP server: enough of RFC 5321 for a client to deliver a message.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(buf) = data.as_mut() {
                        if line == "." {
                            store.lock().expect("mails").push(buf.clone());
                            data = None;
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else {
                            buf.push_str(&line);
                            buf.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, mails)
}

#[tokio::test]
async fn email_goes_out_over_smtp() {
    let (port, mails) = smtp_sink().await;
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tell", NOTIFY);
    let config = format!(
        "[channels.mail]\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_tls = \"none\"\n\
         from = \"runbookd <runbookd@example.com>\"\nto = [\"oncall@example.com\"]\n"
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: config,
            env: vec![],
        },
    );
    let (_, run) = d
        .run_wait("tell", json!({"params": {"channel": "mail"}}))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let start = Instant::now();
    while mails.lock().expect("mails").is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = mails.lock().expect("mails").clone();
    assert_eq!(got.len(), 1, "one mail delivered");
    assert!(got[0].contains("Subject: runbookd: tell"), "{}", got[0]);
    assert!(got[0].contains("To: oncall@example.com"), "{}", got[0]);
    assert!(got[0].contains("Stripe degraded"), "{}", got[0]);
}

#[tokio::test]
async fn replicas_sharing_the_store_send_each_notification_once() {
    let sink = Sink::start(vec![]).await;
    // A slow receiver: while one replica waits for an answer, the other polls the outbox
    // and sees the same notifications due.
    sink.state.lock().expect("sink").delay = Duration::from_millis(150);
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook(
        "announce",
        "fn run(event) { for i in 0..20 { notify(\"oncall\", `message ${i}`); } }\n",
    );
    let opts = Options {
        extra_config: format!(
            "[channels.oncall]\ntype = \"webhook\"\nurl = \"{}\"\n",
            sink.url()
        ),
        ..Default::default()
    };
    // Two runbookd replicas on one PostgreSQL state store: both poll the same outbox.
    let a = Daemon::start(&ws, &opts);
    let _b = Daemon::start(&ws, &opts);
    let (_, run) = a.run_wait("announce", serde_json::json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let got = sink.wait_for(20, Duration::from_secs(20)).await;
    // Give a second sender time to show up, if there were one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut texts: Vec<String> = sink
        .received()
        .iter()
        .map(|(_, _, body)| body["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(got.len() >= 20);
    texts.sort();
    let before = texts.len();
    texts.dedup();
    assert_eq!(before, 20, "each notification sent exactly once: {texts:?}");
    assert_eq!(texts.len(), 20);
}
