//! `runbookd simulate`: every shipped scenario plays to the end against the shipped
//! playbooks, and its timeline shows what the runbook says should happen.

use std::process::Command;

use serde_json::Value;

use crate::helpers::BIN;

/// The timeline of `examples/scenarios/NAME.toml`, as JSON lines.
fn timeline(name: &str) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["simulate", "--json", "--dir"])
        .arg(format!("{root}/playbooks"))
        .arg(format!("{root}/examples/scenarios/{name}.toml"))
        .env_remove("RUST_LOG")
        .output()
        .expect("simulate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn texts(t: &[Value], kind: &str) -> Vec<String> {
    t.iter()
        .filter(|h| h["kind"] == kind)
        .map(|h| h["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn at_of(t: &[Value], needle: &str) -> i64 {
    let start = t.first().and_then(|h| h["at_ms"].as_i64()).unwrap_or(0);
    t.iter()
        .find(|h| h["text"].as_str().is_some_and(|x| x.contains(needle)))
        .and_then(|h| h["at_ms"].as_i64())
        .map(|at| (at - start) / 1000)
        .unwrap_or_else(|| panic!("nothing says {needle:?}: {t:#?}"))
}

#[test]
fn stripe_down_40m_never_resets_walks_to_l2_and_reconciles_on_recovery() {
    let t = timeline("stripe-down-40m");
    let actions = texts(&t, "action");
    assert!(
        !actions.iter().any(|a| a.contains("breaker.reset")),
        "never reset while Stripe is down: {actions:?}"
    );
    let pages = texts(&t, "escalation");
    assert!(
        pages
            .iter()
            .any(|p| p.contains("escalated to L1") && p.contains("Elevated error rates")),
        "{pages:?}"
    );
    assert!(
        at_of(&t, "escalated to L2") >= 30 * 60,
        "L2 after 30 minutes"
    );
    assert!(
        !pages.iter().any(|p| p.contains("escalated to P1")),
        "recovered before an hour: {pages:?}"
    );
    assert!(at_of(&t, "PaymentProcessorDown resolved") > at_of(&t, "Stripe recovers"));
    assert!(texts(&t, "log")
        .iter()
        .any(|l| l.contains("Reconciliation: 3 checked, 3 updated")));
    // Each notification once (two in one virtual millisecond once showed one of them twice).
    let notified = texts(&t, "notify");
    for what in [
        "Reconciliation: 3 checked",
        "PaymentProcessorDown resolved; reconciliation",
    ] {
        assert_eq!(
            notified.iter().filter(|n| n.contains(what)).count(),
            1,
            "{what}: {notified:?}"
        );
    }
    // Users are told: opened with L1, updated at L2, resolved after Stripe recovers.
    let said = |what: &str| {
        let hits: Vec<&String> = actions.iter().filter(|a| a.contains(what)).collect();
        assert_eq!(hits.len(), 1, "{what} once: {actions:?}");
        at_of(&t, what)
    };
    let opened = said("statuspage.open");
    let updated = said("statuspage.update");
    let resolved = said("statuspage.resolve");
    assert!(opened < 120 && updated >= 30 * 60 && resolved > at_of(&t, "Stripe recovers"));
}

#[test]
fn breaker_stuck_open_is_reset_and_the_alert_resolves() {
    let t = timeline("breaker-stuck-open");
    assert!(texts(&t, "action")
        .iter()
        .any(|a| a.contains("breaker.reset breaker:stripe: done")));
    assert!(at_of(&t, "PaymentProcessorDown resolved") > at_of(&t, "breaker.reset"));
}

#[test]
fn stale_pending_500_settles_everything_stripe_has_decided() {
    let t = timeline("stale-pending-500");
    let logs = texts(&t, "log");
    assert!(
        logs.iter()
            .any(|l| l.contains("500 checked, 420 updated, 80 unchanged")),
        "the 80 Stripe still has in processing stay pending: {logs:?}"
    );
}

#[test]
fn expired_api_key_is_paged_never_reset_and_reaches_p1() {
    let t = timeline("expired-api-key");
    assert!(!texts(&t, "action")
        .iter()
        .any(|a| a.contains("breaker.reset")));
    let pages = texts(&t, "escalation");
    assert!(
        pages
            .iter()
            .any(|p| p.contains("Stripe rejects the API key")),
        "{pages:?}"
    );
    assert!(at_of(&t, "escalated to P1") >= 3600);
}

#[test]
fn webhook_secret_rotated_is_reported_with_the_failed_events() {
    let t = timeline("webhook-secret-rotated");
    let notes = texts(&t, "notify");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Webhook delivery (Scenario 5)") && n.contains("failed delivery")),
        "{notes:?}"
    );
    // The signed probe names the cause: the app verifies with another secret.
    assert!(
        notes.iter().any(|n| n
            .contains("mismatch: the app refused an event signed with runbookd's secret (400)")),
        "{notes:?}"
    );
}
