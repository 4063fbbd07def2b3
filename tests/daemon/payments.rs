//! `payments::*` against a real PostgreSQL holding the app's own schema.

use serde_json::json;

use crate::helpers::{AppDb, Daemon, Db, Options, Workspace};

const INVESTIGATE: &str = r#"
fn run(event) {
    #{
        last_hour: payments::counts(3600),
        hourly: payments::hourly(24),
        stale: payments::stale_pending(1800),
        stale_with_ref: payments::stale_pending(1800, #{ with_ref: true }),
        stale_without_ref: payments::stale_pending(1800, #{ with_ref: false, limit: 10 }),
        failures: payments::recent_failures(3600, 10),
        oldest_pending: payments::oldest_pending_age(),
        webhooks: payments::webhooks(5),
        webhooks_last_hour: payments::webhook_count(3600),
    }
}
"#;

#[tokio::test]
async fn investigation_queries_read_the_apps_tables() {
    let app = AppDb::new().await;
    app.payment("completed", 60, Some("pi_ok1")).await;
    app.payment("completed", 120, Some("pi_ok2")).await;
    let failed = app.payment("failed", 300, Some("pi_bad")).await;
    app.payment("failed", 7200, Some("pi_old_bad")).await; // outside the hour
    let recent_pending = app.payment("pending", 60, Some("pi_new")).await;
    let stale_ref = app.payment("pending", 2400, Some("pi_stale")).await;
    let stale_noref = app.payment("pending", 3000, None).await;
    app.webhook_received(30).await;
    app.webhook_received(7200).await;

    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("investigate", INVESTIGATE);
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: app.config(),
            ..Default::default()
        },
    );
    let (_, run) = d.run_wait("investigate", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let r = &run["result"];
    assert_eq!(r["last_hour"]["total"], 6, "{r}");
    assert_eq!(r["last_hour"]["failed"], 1);
    assert_eq!(r["last_hour"]["by_status"]["pending"], 3);
    assert!((r["last_hour"]["failure_rate"].as_f64().unwrap_or(0.0) - 1.0 / 6.0).abs() < 1e-9);
    let hourly_total: i64 = r["hourly"]
        .as_array()
        .expect("hourly")
        .iter()
        .map(|h| h["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(hourly_total, 7);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|p| p["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        ids(&r["stale"]),
        vec![stale_noref.clone(), stale_ref.clone()],
        "oldest first, recent pending excluded"
    );
    assert_eq!(ids(&r["stale_with_ref"]), vec![stale_ref.clone()]);
    assert_eq!(ids(&r["stale_without_ref"]), vec![stale_noref.clone()]);
    assert!(!ids(&r["stale"]).contains(&recent_pending));
    assert_eq!(r["stale"][1]["amount"], "42.50");
    assert_eq!(r["stale"][1]["processor_ref"], "pi_stale");
    assert_eq!(r["stale"][0]["processor_ref"], serde_json::Value::Null);
    assert_eq!(ids(&r["failures"]), vec![failed]);
    let oldest = r["oldest_pending"].as_f64().expect("age");
    assert!((3000.0..3010.0).contains(&oldest), "{oldest}");
    assert_eq!(r["webhooks"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        r["webhooks"][0]["changes"]["type"],
        "payment_intent.succeeded"
    );
    assert_eq!(r["webhooks_last_hour"], 1);
}

#[tokio::test]
async fn set_status_is_a_compare_and_set_with_a_reason() {
    let app = AppDb::new().await;
    let id = app.payment("pending", 3600, Some("pi_1")).await;
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "settle",
        "fn run(event) { payments::set_status(event.params.id, event.params.from, \"completed\", \"Stripe says succeeded\") }\n",
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: app.config(),
            ..Default::default()
        },
    );

    let (_, run) = d
        .run_wait(
            "settle",
            json!({"params": {"id": id, "from": "pending"}, "dry_run": true}),
        )
        .await;
    assert_eq!(run["result"], false, "{run}");
    assert_eq!(run["actions"][0]["outcome"], "planned");
    assert_eq!(
        app.status_of(&id).await.0,
        "pending",
        "dry run changes nothing"
    );

    let (_, run) = d
        .run_wait("settle", json!({"params": {"id": id, "from": "pending"}}))
        .await;
    assert_eq!(run["result"], true, "{run}");
    let (status, metadata) = app.status_of(&id).await;
    assert_eq!(status, "completed");
    assert_eq!(metadata["reconciled"], true);
    assert_eq!(metadata["status_reason"], "Stripe says succeeded");
    assert_eq!(metadata["source"], "test", "existing metadata is kept");

    // The old status no longer matches: nothing changes.
    let (_, run) = d
        .run_wait("settle", json!({"params": {"id": id, "from": "pending"}}))
        .await;
    assert_eq!(run["result"], false);
    let (_, audit) = d.get("/api/v1/audit").await;
    assert_eq!(
        audit
            .as_array()
            .expect("audit")
            .iter()
            .filter(|e| e["action"] == "payments.set_status")
            .count(),
        3
    );
}

#[tokio::test]
async fn database_going_away_is_a_script_error() {
    let app = AppDb::new().await;
    app.payment("pending", 3600, Some("pi_1")).await;
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("count", "fn run(event) { payments::counts(86400).total }\n");
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: app.config(),
            ..Default::default()
        },
    );
    assert_eq!(d.run_wait("count", json!({})).await.1["result"], 1);

    let name = app.url.rsplit('/').next().expect("db name").to_string();
    app.pool.close().await;
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let admin = sqlx::PgPool::connect(&admin).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop");

    let (_, run) = d.run_wait("count", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("payments database"),
        "{run}"
    );
    assert_eq!(d.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn unconfigured_payments_say_so() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("count", "fn run(event) { payments::counts(60) }\n");
    let d = Daemon::start(&ws, &Options::default());
    let (_, run) = d.run_wait("count", json!({})).await;
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("set [payments] database_url"),
        "{run}"
    );
}
