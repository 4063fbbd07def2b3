//! The runbook's key metrics, measured by runbookd from the app's real Redis and PostgreSQL
//! and the fake Stripe, as Prometheus scrapes them.

use std::time::Duration;

use serde_json::json;

use crate::{fake_stripe::GOOD_KEY, helpers::Daemon, outage::Debtflow};

/// The value of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_sample(d: &Daemon, series: &str, want: impl Fn(f64) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = d.metrics().await;
        if sample(&text, series).is_some_and(&want) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} never as expected:\n{text}");
}

#[tokio::test]
async fn key_metrics_follow_the_app() {
    let w = Debtflow::new().await;
    // Last 5 minutes: 3 payments, 1 failed. Oldest pending: 40 minutes (outside the window).
    w.app.payment("completed", 30, None).await;
    w.app.payment("failed", 60, None).await;
    w.app.payment("pending", 90, None).await;
    w.app.payment("pending", 2400, None).await;
    // Stripe sent 4 events of the handled types (and one it does not send to the app) a few
    // minutes ago; the app recorded 3 of them.
    let now = chrono::Utc::now().timestamp();
    for (i, kind) in [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
        "payment_intent.succeeded",
        "customer.created",
    ]
    .iter()
    .enumerate()
    {
        w.stripe.world.lock().expect("world").events.push(json!({
            "id": format!("evt_{i}"), "object": "event", "type": kind, "created": now - 180,
            "pending_webhooks": 0, "livemode": false, "api_version": "2024-06-20",
            "data": {"object": {}}, "request": {"id": null, "idempotency_key": null},
        }));
    }
    for _ in 0..3 {
        w.app.webhook_received(170).await;
    }
    let mut opts = w.options("", GOOD_KEY);
    opts.env
        .push(("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "200ms".into()));
    let d = Daemon::start(&w.ws, &opts);

    // Wait until every measurement has landed at least once.
    let mut text = String::new();
    for _ in 0..100 {
        text = d.metrics().await;
        let measured = |m: &str| {
            sample(
                &text,
                &format!("runbookd_key_metric_last_success_timestamp_seconds{{metric=\"{m}\"}}"),
            )
            .is_some()
        };
        if [
            "breaker:stripe",
            "payments_failure_ratio",
            "payments_oldest_pending_age",
            "webhook_delivery_ratio",
            "stripe_api",
        ]
        .iter()
        .all(|m| measured(m))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(
            &text,
            "runbookd_breaker_state{breaker=\"stripe\",state=\"closed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let ratio = sample(&text, "runbookd_payments_failure_ratio").expect("failure ratio");
    assert!(
        (ratio - 1.0 / 3.0).abs() < 1e-9,
        "1 of 3 payments in 5 min failed: {ratio}"
    );
    let oldest = sample(&text, "runbookd_payments_oldest_pending_age_seconds").expect("age");
    assert!((2400.0..2460.0).contains(&oldest), "{oldest}");
    assert_eq!(
        sample(&text, "runbookd_webhook_events_expected"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "runbookd_webhook_events_received"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "runbookd_webhook_delivery_ratio"), Some(0.75));
    assert!(
        sample(&text, "runbookd_stripe_api_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("runbookd_stripe_api_probes_total{result=\"connected\"}"),
        "{text}"
    );

    // The app's workers open the breaker: the metric PaymentProcessorDown fires on.
    w.open_breaker(10.0).await;
    // One probe sets the state gauges, then the failures gauge, while a scrape may read in
    // between: wait for the last one written, then the whole probe is visible.
    //
    // The failures gauge keeps its last value when a round cannot read Redis (the state then
    // says `unknown`), so a scrape showing 5 failures need not show `open`: wait for one
    // round that read the open breaker whole.
    let mut text = String::new();
    for _ in 0..100 {
        text = d.metrics().await;
        if sample(&text, "runbookd_breaker_failures{breaker=\"stripe\"}") == Some(5.0)
            && sample(
                &text,
                "runbookd_breaker_state{breaker=\"stripe\",state=\"open\"}",
            ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(
            &text,
            "runbookd_breaker_state{breaker=\"stripe\",state=\"open\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "runbookd_breaker_state{breaker=\"stripe\",state=\"closed\"}"
        ),
        Some(0.0)
    );

    // Stripe fails: the failed probe is counted, so a stale latency is not mistaken for health.
    w.stripe.behave(|b| b.fail_500 = 1000);
    wait_sample(
        &d,
        "runbookd_key_metric_errors_total{metric=\"stripe_api\"}",
        |v| v >= 1.0,
    )
    .await;
}

#[tokio::test]
async fn nothing_configured_exports_no_made_up_values() {
    let ws = crate::helpers::Workspace::new(crate::helpers::Db::Sqlite).await;
    let d = Daemon::start(
        &ws,
        &crate::helpers::Options {
            env: vec![("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "100ms".into())],
            ..Default::default()
        },
    );
    // Let a few rounds pass.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = d.metrics().await;
    for series in [
        "runbookd_payments_failure_ratio",
        "runbookd_payments_oldest_pending_age_seconds",
        "runbookd_webhook_delivery_ratio",
        "runbookd_breaker_state{",
    ] {
        assert_eq!(
            sample(&text, series),
            None,
            "{series} without a backend would be a made-up value:\n{text}"
        );
    }
}
