//! `webhooks::signed_probe()` ("verify the webhook secret is correct") against the app's
//! webhook endpoint played by Python: it checks `Stripe-Signature` with Python's own hmac,
//! answers 400 on a mismatch, and on a match records a `webhook_received` row in the app's
//! real PostgreSQL table as the app does — which runbookd's delivery counts must leave out.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::{free_port, wait_listening, AppDb, Daemon, Db, Options, Workspace};

const APP_ENDPOINT: &str = r#"
import hashlib, hmac, http.server, json, os, subprocess, sys
secret = os.environ["APP_SECRET"].encode()
db = os.environ["APP_DB"]
class Endpoint(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        t, sigs = None, []
        for part in self.headers.get("stripe-signature", "").split(","):
            k, _, v = part.strip().partition("=")
            if k == "t":
                t = v
            elif k == "v1":
                sigs.append(v)
        want = t and hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not want or not any(hmac.compare_digest(want, s) for s in sigs):
            self.send_response(400); self.end_headers(); self.wfile.write(b"Invalid signature")
            return
        kind = json.loads(body)["type"]
        sql = "INSERT INTO audit_auditlog (action, object_id, changes, created_at) VALUES ('webhook_received', gen_random_uuid(), jsonb_build_object('type', :'t'), now());"
        subprocess.run(["psql", db, "-q", "-v", "ON_ERROR_STOP=1", "-v", "t=" + kind], input=sql.encode(), check=True)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Endpoint).serve_forever()
"#;

const PLAYBOOK: &str = r#"
fn triggers() { [#{ manual: true }] }
fn run(event) {
    #{ probe: webhooks::signed_probe(), received: webhooks::received(3600) }
}
"#;

const RUNBOOKD_SECRET: &str = "whsec_runbookd_copy_0123456789";

struct Endpoint(Child);

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn app_endpoint(port: u16, app: &AppDb, secret: &str) -> Endpoint {
    let child = Command::new("python3")
        .args(["-c", APP_ENDPOINT, &port.to_string()])
        .env("APP_SECRET", secret)
        .env("APP_DB", &app.url)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 (scripts/test installs it)");
    wait_listening(port, "the app's webhook endpoint");
    Endpoint(child)
}

async fn received_rows(app: &AppDb) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT changes->>'type' FROM audit_auditlog WHERE action = 'webhook_received' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("audit rows")
}

fn start(ws: &Workspace, app: &AppDb, port: u16, opt_in: bool) -> Daemon {
    Daemon::start(
        ws,
        &Options {
            extra_config: format!(
                "{payments}\n[stripe]\nwebhook_url = \"http://127.0.0.1:{port}/api/v1/payments/webhook/stripe/\"\n\
                 webhook_secret_env = \"STRIPE_WEBHOOK_SECRET\"\n\n[webhooks]\nsigned_probe = {opt_in}\n",
                payments = app.config(),
            ),
            env: vec![("STRIPE_WEBHOOK_SECRET".into(), RUNBOOKD_SECRET.into())],
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_signed_probe_tells_a_matching_secret_from_a_rotated_one() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("probe", PLAYBOOK);
    let app = AppDb::new().await;
    app.webhook_received(30).await; // one real delivery from Stripe
    let port = free_port();
    let d = start(&ws, &app, port, true);

    // A dry run plans the probe and sends nothing.
    let endpoint = app_endpoint(port, &app, RUNBOOKD_SECRET);
    let (status, dry) = d.run_wait("probe", json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["result"]["probe"]["planned"], true, "{dry}");
    assert_eq!(dry["actions"][0]["outcome"], "planned");
    assert_eq!(
        received_rows(&app).await.len(),
        1,
        "nothing reached the app"
    );

    // The app holds runbookd's secret: accepted, one probe row, left out of the count.
    let (_, run) = d.run_wait("probe", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let probe = &run["result"]["probe"];
    assert_eq!(probe["status"], 200, "{probe}");
    assert_eq!(probe["ok"], true);
    assert!(
        probe["verdict"].as_str().unwrap_or("").starts_with("match"),
        "{probe}"
    );
    assert_eq!(
        received_rows(&app).await,
        ["payment_intent.succeeded", "runbookd.webhook_probe"],
        "the app recorded the probe"
    );
    assert_eq!(
        run["result"]["received"], 1,
        "runbookd's count leaves its own probe out"
    );
    let (_, audit) = d.get("/api/v1/audit?limit=20").await;
    assert!(
        audit
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["action"] == "webhooks.signed_probe"),
        "{audit}"
    );

    // The secret was rotated in Stripe and the app kept the old one: 400, nothing recorded.
    drop(endpoint);
    let _endpoint = app_endpoint(port, &app, "whsec_before_rotation");
    let (_, run) = d.run_wait("probe", json!({})).await;
    let probe = &run["result"]["probe"];
    assert_eq!(probe["status"], 400, "{probe}");
    assert_eq!(probe["ok"], false);
    assert!(
        probe["verdict"].as_str().unwrap_or("").contains(
            "STRIPE_WEBHOOK_SECRET it verifies with is not the endpoint's signing secret"
        ),
        "{probe}"
    );
    assert_eq!(received_rows(&app).await.len(), 2);
    let shown = format!("{run}{}", d.logs());
    assert!(!shown.contains(RUNBOOKD_SECRET), "the secret leaked");
}

#[tokio::test]
async fn without_the_opt_in_no_signed_probe_is_sent() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("probe", PLAYBOOK);
    let app = AppDb::new().await;
    let port = free_port();
    let _endpoint = app_endpoint(port, &app, RUNBOOKD_SECRET);
    let d = start(&ws, &app, port, false);
    let (_, run) = d.run_wait("probe", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error: &Value = &run["error"]["message"];
    assert!(
        error
            .as_str()
            .unwrap_or("")
            .contains("set [webhooks] signed_probe = true"),
        "{run}"
    );
    assert!(received_rows(&app).await.is_empty());
}
