//! Parity: one table of cases run against every implementation of a backend, so the
//! simulation behind `runbookd test` cannot drift from production.
//!
//! - breakers: Redis and the in-memory store, for the django and plain layouts — same
//!   snapshots after every step, and the same bytes under the same keys;
//! - payments: the app's PostgreSQL and the simulated world's rows;
//! - Stripe: the fake Stripe HTTP server (through production's HTTPS wire) and the
//!   simulated Stripe wire — same `ping()` classification for every answer, same intents,
//!   same key info;
//! - the status page: in `statuspage.rs`, beside its daemon tests.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use redis::AsyncCommands;
use runbookd::{
    clock::Clock,
    config::{BreakerConfig, BreakerPreset, BreakerStoreKind, Config, StripeConfig},
    primitives::{
        breaker::{layout::Snapshot, BreakerError, Breakers},
        payments::Payments,
        redis_conn::RedisConnections,
        stripe::Stripe,
        FenceToken,
    },
    sim::{backends::stripe::SimStripeWire, World},
};

use crate::{
    fake_stripe::{FakeStripe, GOOD_KEY},
    helpers::{redis, redis_url, AppDb},
};

/// One step of the breaker table, and what every store must answer after it.
enum Step {
    Failure,
    Success,
    Reset,
    /// Moves the breakers' (virtual) clock.
    Wait(f64),
    /// `n` failures at once.
    Concurrent(usize),
}

/// (step, expected state, expected failures)
fn breaker_table() -> Vec<(Step, &'static str, i64)> {
    use Step::*;
    vec![
        (Failure, "closed", 1),
        (Failure, "closed", 2),
        // Time passes between failures: plain's `last_failure` follows every failure,
        // django's `opened_at` only the opening one.
        (Wait(10.0), "closed", 2),
        (Failure, "closed", 3),
        (Failure, "closed", 4),
        (Failure, "open", 5),
        (Wait(29.5), "open", 5),
        (Wait(0.5), "half_open", 5),
        (Success, "closed", 0),
        (Concurrent(50), "open", 50),
        (Reset, "closed", 0),
        (Failure, "closed", 1),
        (Reset, "closed", 0),
    ]
}

/// What the table compares: the snapshot without the key names (they carry the test's
/// unique stem) and with times rounded to the millisecond.
fn comparable(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "state": s.state, "failures": s.failures,
        "opened_at": s.opened_at.map(|t| (t * 1000.0).round()),
        "seconds_since_open": s.seconds_since_open.map(|t| (t * 1000.0).round()),
        "preset": s.preset,
    })
}

async fn drive(breakers: &Breakers, clock: &Clock, step: &Step) -> Snapshot {
    match step {
        Step::Failure => breakers.record_failure("b", None).await,
        Step::Success => breakers.record_success("b", None).await,
        Step::Reset => breakers.reset("b", None).await,
        Step::Wait(s) => {
            clock.advance((s * 1000.0) as i64);
            breakers.read("b").await
        }
        Step::Concurrent(n) => {
            let all = (0..*n).map(|_| breakers.record_failure("b", None));
            for r in futures_util::future::join_all(all).await {
                r.expect("concurrent failure");
            }
            breakers.read("b").await
        }
    }
    .expect("breaker step")
}

fn breakers_for(
    preset: BreakerPreset,
    store: BreakerStoreKind,
    stem: &str,
    clock: &Clock,
) -> Breakers {
    let cfg = BreakerConfig {
        preset,
        store,
        key_base: Some(stem.to_string()),
        ..Default::default()
    };
    Breakers::new(
        BTreeMap::from([("b".to_string(), cfg)]),
        Some(redis_url()),
        Arc::new(RedisConnections::default()),
        clock.clone(),
    )
}

#[tokio::test]
async fn breaker_stores_agree_step_by_step_and_byte_for_byte() {
    let mut con = redis().await;
    for preset in [BreakerPreset::Django, BreakerPreset::Plain] {
        let stem = format!("circuit_breaker:parity-{}", uuid::Uuid::now_v7());
        // Both stores on the same virtual clock, so their times are equal to the bit.
        let clock = Clock::virtual_at(1_764_000_000_000);
        let redis_b = breakers_for(preset, BreakerStoreKind::Redis, &stem, &clock);
        let memory_b = breakers_for(preset, BreakerStoreKind::Memory, &stem, &clock);
        for (i, (step, state, failures)) in breaker_table().iter().enumerate() {
            let from_redis = drive(&redis_b, &clock, step).await;
            // The clock moved once for both: the memory store reads it without moving it.
            let from_memory = match step {
                Step::Wait(_) => memory_b.read("b").await.expect("read"),
                other => drive(&memory_b, &clock, other).await,
            };
            let ctx = format!("{preset:?} step {i}");
            assert_eq!(from_redis.state, *state, "{ctx}: Redis state");
            assert_eq!(from_redis.failures, *failures, "{ctx}: Redis failures");
            assert_eq!(
                comparable(&from_redis),
                comparable(&from_memory),
                "{ctx}: Redis and memory disagree"
            );
            // The bytes: what memory holds is what Redis holds, key by key.
            let keys = &from_redis.keys;
            let in_redis: Vec<Option<Vec<u8>>> = con
                .mget(&[&keys.state, &keys.failures, &keys.time])
                .await
                .expect("mget");
            let seen_by_memory = memory_b.raw_values("b").await.expect("raw");
            assert_eq!(
                in_redis,
                vec![seen_by_memory.0, seen_by_memory.1, seen_by_memory.2],
                "{ctx}: stored bytes differ"
            );
        }
        let _: () = con
            .del(&[format!("{stem}:state"), format!("{stem}:failures")])
            .await
            .expect("cleanup");
    }
}

/// A fenced write: `attempt` of the parity run.
fn token(run: &str, attempt: i64) -> FenceToken {
    FenceToken {
        run: run.to_string(),
        attempt,
    }
}

#[tokio::test]
async fn a_breaker_write_older_than_the_runs_latest_attempt_is_refused_by_both_stores() {
    let mut con = redis().await;
    let run = format!("run-{}", uuid::Uuid::now_v7());
    for (kind, label) in [
        (BreakerStoreKind::Redis, "Redis"),
        (BreakerStoreKind::Memory, "memory"),
    ] {
        let stem = format!("circuit_breaker:parity-{}", uuid::Uuid::now_v7());
        let clock = Clock::virtual_at(1_764_000_000_000);
        let b = breakers_for(BreakerPreset::Django, kind, &stem, &clock);
        let after_5 = b
            .record_failure("b", Some(&token(&run, 5)))
            .await
            .expect("attempt 5 writes");
        assert_eq!(after_5.failures, 1, "{label}");
        let raw = b.raw_values("b").await.expect("raw");
        // Attempt 4 is stale: every kind of write is refused and nothing changes.
        for (what, refused) in [
            (
                "record_failure",
                b.record_failure("b", Some(&token(&run, 4))).await.err(),
            ),
            (
                "record_success",
                b.record_success("b", Some(&token(&run, 4))).await.err(),
            ),
            ("reset", b.reset("b", Some(&token(&run, 4))).await.err()),
        ] {
            assert!(
                matches!(refused, Some(BreakerError::Fenced { attempt: 4, .. })),
                "{label}: attempt 4's {what} after attempt 5 is refused, got {refused:?}"
            );
            assert_eq!(
                b.raw_values("b").await.expect("raw"),
                raw,
                "{label}: a refused {what} changes nothing"
            );
        }
        // The same attempt again, and a later one, pass.
        let again = b.record_failure("b", Some(&token(&run, 5))).await;
        assert_eq!(again.expect("attempt 5 again").failures, 2, "{label}");
        let after_6 = b.record_failure("b", Some(&token(&run, 6))).await;
        assert_eq!(after_6.expect("attempt 6").failures, 3, "{label}");
        // Another run's attempt 1 is not this run's business; the app's workers and the
        // API's reset carry no token and are never refused.
        let other = b
            .record_failure("b", Some(&token(&format!("{run}-other"), 1)))
            .await;
        assert_eq!(other.expect("another run").failures, 4, "{label}");
        assert_eq!(
            b.record_failure("b", None)
                .await
                .expect("no token")
                .failures,
            5,
            "{label}"
        );
        assert!(
            matches!(
                b.record_success("b", Some(&token(&run, 5))).await,
                Err(BreakerError::Fenced { attempt: 5, .. })
            ),
            "{label}: attempt 5 after attempt 6 is refused"
        );
        let reset = b.reset("b", None).await.expect("reset without a token");
        assert_eq!(
            (reset.state.as_str(), reset.failures),
            ("closed", 0),
            "{label}"
        );
        if kind == BreakerStoreKind::Redis {
            // Where the token lives: runbookd's own key beside the state key, with a TTL.
            let fence = format!("{}:runbookd_fence:{run}", after_5.keys.state);
            let seen: Option<String> = con.get(&fence).await.expect("get");
            assert_eq!(seen.as_deref(), Some("6"), "the highest attempt seen");
            let ttl: i64 = con.ttl(&fence).await.expect("ttl");
            assert!(ttl > 0, "the fence key expires (TTL {ttl})");
            let _: () = con
                .del(&[
                    fence,
                    format!("{}:runbookd_fence:{run}-other", after_5.keys.state),
                ])
                .await
                .expect("cleanup");
        }
    }
}

#[tokio::test]
async fn memory_breakers_expire_as_redis_ttls_say() {
    // Redis applies `open_ttl`/`closed_ttl`; memory must expire at the same moments.
    let stem = format!("circuit_breaker:parity-{}", uuid::Uuid::now_v7());
    let clock = Clock::virtual_at(1_764_000_000_000);
    let redis_b = breakers_for(
        BreakerPreset::Django,
        BreakerStoreKind::Redis,
        &stem,
        &clock,
    );
    let memory_b = breakers_for(
        BreakerPreset::Django,
        BreakerStoreKind::Memory,
        &stem,
        &clock,
    );
    let mut con = redis().await;
    for _ in 0..5 {
        redis_b.record_failure("b", None).await.expect("failure");
        memory_b.record_failure("b", None).await.expect("failure");
    }
    let keys = redis_b.read("b").await.expect("read").keys;
    let ttl: i64 = con.ttl(&keys.state).await.expect("ttl");
    assert!((299..=300).contains(&ttl), "Redis open TTL {ttl}");
    clock.advance(299_000);
    assert_eq!(memory_b.read("b").await.expect("read").state, "half_open");
    clock.advance(1_000);
    let after = memory_b.read("b").await.expect("read");
    assert_eq!(
        (after.state.as_str(), after.opened_at),
        ("closed", None),
        "memory forgets the open state when Redis's TTL would"
    );
    let _: () = con
        .del(&[&keys.state, &keys.failures, &keys.time])
        .await
        .expect("cleanup");
}

// ---------------------------------------------------------------------------------------
// payments

/// A projection of a payment both backends must agree on (ids and exact ages differ).
fn shape(p: &runbookd::primitives::payments::Payment) -> (String, bool, Option<String>, i64) {
    (
        p.status.clone(),
        p.processor_ref.is_some(),
        p.amount.clone(),
        (p.age_seconds / 60.0).round() as i64,
    )
}

#[tokio::test]
async fn postgres_and_simulated_payments_answer_alike() {
    let db = AppDb::new().await;
    let mut cfg = Config::default();
    cfg.payments.database_url = Some(db.url.clone());
    let pg = Payments::new(&cfg.payments).expect("payments");
    let world = World::new(
        Clock::virtual_at(chrono::Utc::now().timestamp_millis()),
        &cfg,
    );
    let sim = Payments::with_backend(world.clone(), &cfg.payments);

    // The same rows in both: (status, age, processor_ref).
    let rows: [(&str, i64, Option<&str>); 6] = [
        ("pending", 1_800, None),
        ("pending", 1_200, Some("pi_a")),
        ("pending", 60, None),
        ("failed", 300, None),
        ("failed", 7_200, None),
        ("completed", 120, Some("pi_b")),
    ];
    let mut pg_ids = Vec::new();
    let mut sim_ids = Vec::new();
    for (status, age, r) in rows {
        pg_ids.push(db.payment(status, age, r).await);
        sim_ids.push(world.add_payment(status, age as f64, r.map(String::from)));
    }
    for age in [30, 90, 4_000] {
        db.webhook_received(age).await;
        world
            .state()
            .webhook_rows
            .push(world.clock().now_ms() - age * 1000);
    }

    for (name, p) in [("postgres", &pg), ("simulated", &sim)] {
        p.backend().expect(name).ping().await.expect(name);
    }
    let hour = Duration::from_secs(3_600);
    let (a, b) = (pg.backend().expect("pg"), sim.backend().expect("sim"));
    let (ca, cb) = (
        a.counts(hour).await.expect("pg"),
        b.counts(hour).await.expect("sim"),
    );
    assert_eq!(ca, cb, "counts of the last hour");
    assert_eq!((ca.total, ca.failed), (5, 1));

    for with_ref in [None, Some(true), Some(false)] {
        let older = Duration::from_secs(900);
        let sa: Vec<_> = a
            .stale_pending(older, with_ref, 10)
            .await
            .expect("pg")
            .iter()
            .map(shape)
            .collect();
        let sb: Vec<_> = b
            .stale_pending(older, with_ref, 10)
            .await
            .expect("sim")
            .iter()
            .map(shape)
            .collect();
        assert_eq!(sa, sb, "stale_pending with_ref={with_ref:?}");
    }
    let older = Duration::from_secs(900);
    let (na, nb) = (
        a.count_stale_pending(older).await.expect("pg"),
        b.count_stale_pending(older).await.expect("sim"),
    );
    assert_eq!(na, nb, "count_stale_pending (total, without processor_ref)");
    let listed = a.stale_pending(older, None, 1000).await.expect("pg");
    let without = listed.iter().filter(|p| p.processor_ref.is_none()).count();
    assert_eq!(
        na,
        (listed.len() as i64, without as i64),
        "the count is the listing's"
    );
    let ra: Vec<_> = a
        .recent_failures(Duration::from_secs(86_400), 10)
        .await
        .expect("pg")
        .iter()
        .map(shape)
        .collect();
    let rb: Vec<_> = b
        .recent_failures(Duration::from_secs(86_400), 10)
        .await
        .expect("sim")
        .iter()
        .map(shape)
        .collect();
    assert_eq!(ra, rb, "recent failures, newest first");
    assert_eq!(ra.len(), 2);

    let (oa, ob) = (
        a.oldest_pending_age().await.expect("pg").expect("some"),
        b.oldest_pending_age().await.expect("sim").expect("some"),
    );
    assert!((oa - ob).abs() < 30.0, "oldest pending: {oa} vs {ob}");

    // Compare-and-set: once, and a second time it finds the status changed.
    for (p, id) in [(a, &pg_ids[0]), (b, &sim_ids[0])] {
        assert!(p
            .set_status(id, "pending", "failed", "parity")
            .await
            .expect("cas"));
        assert!(!p
            .set_status(id, "pending", "failed", "parity")
            .await
            .expect("cas"));
        let row = p.get(id).await.expect("get").expect("row");
        assert_eq!(row.status, "failed");
        for (k, v) in [
            ("reconciled", serde_json::json!(true)),
            ("status_reason", serde_json::json!("parity")),
            ("status_changed_by", serde_json::json!("runbookd")),
            ("previous_status", serde_json::json!("pending")),
        ] {
            assert_eq!(row.metadata[k], v, "metadata {k}");
        }
    }
    assert!(a
        .get("00000000-0000-0000-0000-000000000000")
        .await
        .expect("pg")
        .is_none());
    assert!(b.get("pay_nope").await.expect("sim").is_none());

    // The app's own reconciliation (Prevention 5): runbookd's changes are not the app's.
    for p in [a, b] {
        assert_eq!(p.newest_app_reconciled_age().await.expect("age"), None);
    }
    sqlx::query(
        "UPDATE payments_payment SET metadata = metadata || '{\"reconciled\": true}' WHERE id = $1::uuid",
    )
    .bind(&pg_ids[5])
    .execute(&db.pool)
    .await
    .expect("app reconciles");
    world.state().payments[5].metadata["reconciled"] = serde_json::json!(true);
    let (na, nb) = (
        a.newest_app_reconciled_age()
            .await
            .expect("pg")
            .expect("some"),
        b.newest_app_reconciled_age()
            .await
            .expect("sim")
            .expect("some"),
    );
    assert!(
        (na - nb).abs() < 30.0 && (na - 120.0).abs() < 30.0,
        "newest reconciled by the app: {na} vs {nb}"
    );

    let window = Duration::from_secs(120);
    assert_eq!(
        a.webhook_count(window).await.expect("pg"),
        b.webhook_count(window).await.expect("sim")
    );
    let (wa, wb) = (
        a.recent_webhooks(5).await.expect("pg"),
        b.recent_webhooks(5).await.expect("sim"),
    );
    assert_eq!(wa.len(), wb.len());
    assert_eq!(wa[0]["changes"], wb[0]["changes"]);
}

// ---------------------------------------------------------------------------------------
// Stripe

struct Stripes {
    fake: FakeStripe,
    real: Stripe,
    world: Arc<World>,
    simulated: Stripe,
    _key: tempfile::NamedTempFile,
}

async fn stripes() -> Stripes {
    let fake = FakeStripe::start().await;
    let key = tempfile::NamedTempFile::new().expect("key file");
    std::fs::write(key.path(), GOOD_KEY).expect("write key");
    let cfg = StripeConfig {
        api_base: format!("http://{}", fake.addr),
        status_url: format!("http://{}/status.json", fake.addr),
        api_key_env: None,
        api_key_file: Some(key.path().to_path_buf()),
        expected_mode: "test".into(),
        timeout: Duration::from_secs(2),
        max_attempts: 1,
        max_requests_per_second: 0,
        ..Default::default()
    };
    let config = Config {
        stripe: cfg.clone(),
        ..Default::default()
    };
    let clock = Clock::virtual_at(chrono::Utc::now().timestamp_millis());
    let world = World::new(clock.clone(), &config);
    world.state().stripe.key = Some(GOOD_KEY.to_string());
    let wire = Arc::new(SimStripeWire {
        world: world.clone(),
    });
    Stripes {
        real: Stripe::new(&cfg),
        simulated: Stripe::with_wire(&cfg, wire, reqwest::Client::new(), clock),
        fake,
        world,
        _key: key,
    }
}

#[tokio::test]
async fn fake_and_simulated_stripe_classify_every_answer_alike() {
    let s = stripes().await;
    // (what happens, how to make the fake do it, how to make the world do it)
    type Knob = Box<dyn Fn(&Stripes, bool)>;
    let cases: Vec<(&str, &str, Knob)> = vec![
        ("200", "connected", Box::new(|_, _| {})),
        (
            "401",
            "auth_error",
            Box::new(|s, on| {
                s.fake.behave(|b| b.answer_status = on.then_some(401));
                s.world.state().stripe.key_rejected = on;
            }),
        ),
        (
            "403",
            "auth_error",
            Box::new(|s, on| {
                s.fake.behave(|b| b.answer_status = on.then_some(403));
                s.world.state().stripe.answer_status = on.then_some(403);
            }),
        ),
        (
            "429",
            "rate_limited",
            Box::new(|s, on| {
                s.fake.behave(|b| b.answer_status = on.then_some(429));
                s.world.state().stripe.rate_limited = on;
            }),
        ),
        (
            "503",
            "error",
            Box::new(|s, on| {
                s.fake.behave(|b| b.answer_status = on.then_some(503));
                s.world.state().stripe.answer_status = on.then_some(503);
            }),
        ),
    ];
    for (what, want, knob) in &cases {
        knob(&s, true);
        let (real, sim) = (s.real.ping().await, s.simulated.ping().await);
        assert_eq!(real.result, *want, "{what}: fake Stripe → {real:?}");
        assert_eq!(sim.result, *want, "{what}: simulated Stripe → {sim:?}");
        knob(&s, false);
    }

    // Unreachable: a port nobody listens on, and a world whose Stripe is down.
    let mut down = s.real.config().clone();
    down.api_base = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let unreachable = Stripe::new(&down).ping().await;
    s.world.state().stripe.api_down = true;
    let sim = s.simulated.ping().await;
    s.world.state().stripe.api_down = false;
    assert_eq!(unreachable.result, "connection_error", "{unreachable:?}");
    assert_eq!(sim.result, "connection_error", "{sim:?}");

    // No key: both say auth_error without sending anything.
    let mut keyless = s.real.config().clone();
    keyless.api_key_file = None;
    let before = s.fake.requests().len();
    let none = Stripe::new(&keyless).ping().await;
    assert_eq!(s.fake.requests().len(), before, "no request without a key");
    s.world.state().stripe.key = None;
    let sim_none = s.simulated.ping().await;
    let (ki_real, ki_sim) = (Stripe::new(&keyless).key_info(), s.simulated.key_info());
    s.world.state().stripe.key = Some(GOOD_KEY.to_string());
    assert_eq!(
        (none.result.as_str(), sim_none.result.as_str()),
        ("auth_error", "auth_error")
    );
    assert_eq!((ki_real.set, ki_sim.set), (false, false));

    let (a, b) = (s.real.key_info(), s.simulated.key_info());
    assert_eq!(
        (a.set, a.prefix, a.mode, a.matches_expected),
        (b.set, b.prefix, b.mode, b.matches_expected),
        "key info"
    );
}

#[tokio::test]
async fn fake_and_simulated_stripe_return_the_same_intents() {
    let s = stripes().await;
    for (id, status, payment) in [
        ("pi_1", "processing", "pay_1"),
        ("pi_2", "succeeded", "pay_2"),
    ] {
        s.fake.intent(id, status, payment);
        s.world.add_intent(id, status, Some(payment.to_string()));
    }
    let view = |pi: &runbookd::primitives::stripe::IntentSummary| {
        (
            pi.id.clone(),
            pi.status.clone(),
            pi.amount,
            pi.currency.clone(),
            pi.metadata.get("payment_id").cloned(),
        )
    };
    for stripe in [&s.real, &s.simulated] {
        let one = stripe
            .payment_intent("pi_1")
            .await
            .expect("retrieve")
            .expect("known");
        assert_eq!(
            view(&one),
            (
                "pi_1".into(),
                "processing".into(),
                4250,
                "usd".into(),
                Some("pay_1".into())
            )
        );
        assert!(stripe
            .payment_intent("pi_nope")
            .await
            .expect("404 is an answer")
            .is_none());
        let found = stripe.intents_for_payment("pay_2").await.expect("search");
        assert_eq!(found.iter().map(view).collect::<Vec<_>>().len(), 1);
        assert_eq!(found[0].id, "pi_2");
        let endpoints = stripe.webhook_endpoints().await.expect("endpoints");
        assert_eq!(endpoints[0]["status"], "enabled");
        let page = stripe.status_page().await;
        assert_eq!((page.indicator.as_str(), page.operational), ("none", true));
    }
}

// ---------------------------------------------------------------------------------------
// admission: the daemon and `runbookd test` admit the same alerts the same way

const WATCHER: &str = r#"
fn triggers() { [#{ alert: "PaymentFailureRateHigh", on_resolved: true, cooldown: "1h" }] }
fn run(event) { #{ status: event.status } }
"#;

/// (alertname, labels besides alertname, status): same name with different labels, a
/// resend within the cooldown, an HA pair's duplicate, a resolution nobody fired, and the
/// resolution of the first.
fn admission_cases() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    use serde_json::json;
    vec![
        (
            "PaymentFailureRateHigh",
            json!({"service": "payments", "region": "eu"}),
            "firing",
        ),
        (
            "PaymentFailureRateHigh",
            json!({"service": "payments", "region": "us"}),
            "firing",
        ),
        (
            "PaymentFailureRateHigh",
            json!({"service": "payments", "region": "eu"}),
            "firing",
        ),
        (
            "PaymentFailureRateHigh",
            json!({"service": "payments", "region": "eu"}),
            "firing",
        ),
        (
            "PaymentFailureRateHigh",
            json!({"service": "billing", "region": "eu"}),
            "resolved",
        ),
        (
            "PaymentFailureRateHigh",
            json!({"service": "payments", "region": "eu"}),
            "resolved",
        ),
    ]
}

/// Per case: (runs started, index of its incident in order of first appearance); then
/// the final status of each incident in that order.
type Admitted = (Vec<(usize, Option<usize>)>, Vec<String>);

fn index_of(seen: &mut Vec<String>, id: Option<String>) -> Option<usize> {
    let id = id?;
    Some(match seen.iter().position(|s| *s == id) {
        Some(i) => i,
        None => {
            seen.push(id);
            seen.len() - 1
        }
    })
}

async fn admitted_by_daemon(key_labels: &str) -> Admitted {
    use crate::helpers::{Daemon, Db, Options, Workspace};
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("watch", WATCHER);
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: format!("[alerts]\nincident_key_labels = {key_labels}\n"),
            ..Default::default()
        },
    );
    let mut seen = Vec::new();
    let mut steps = Vec::new();
    for (name, labels, status) in admission_cases() {
        let mut all: BTreeMap<String, String> = serde_json::from_value(labels).expect("labels");
        all.insert("alertname".into(), name.into());
        let body = serde_json::json!({
            "version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": status,
            "receiver": "runbookd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager", "alerts": [{
                "status": status, "labels": all, "annotations": {},
                "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                // What Alertmanager sends; the simulation computes the same from the labels.
                "fingerprint": runbookd::dispatch::admission::fingerprint(&all),
            }],
        });
        let (code, outcome) = crate::alerts::post(&d, &body).await;
        assert_eq!(code, 200, "{outcome}");
        let a = &outcome["alerts"][0];
        let runs = a["runs"].as_array().map(Vec::len).unwrap_or(0);
        let incident = a["incident"].as_str().map(String::from);
        steps.push((runs, index_of(&mut seen, incident)));
    }
    // The resolution's run resolves its incident when it finishes.
    let incidents = d
        .poll(
            "/api/v1/incidents?limit=100",
            Duration::from_secs(10),
            |v| {
                v.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|i| i["id"] == seen[0].as_str() && i["status"] == "resolved")
                })
            },
        )
        .await;
    let statuses = seen
        .iter()
        .map(|id| {
            incidents
                .as_array()
                .and_then(|a| a.iter().find(|i| i["id"] == id.as_str()))
                .and_then(|i| i["status"].as_str())
                .unwrap_or("missing")
                .to_string()
        })
        .collect();
    (steps, statuses)
}

fn admitted_by_simulation(key_labels: Vec<String>, runtime: tokio::runtime::Handle) -> Admitted {
    use runbookd::{engine, sim::driver::Sim};
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("watch.rhai"), WATCHER).expect("playbook");
    let mut config = Config::default();
    config.alerts.incident_key_labels = key_labels;
    let engine = Arc::new(engine::build(&config.playbooks, dir.path()));
    let catalog = Arc::new(engine::Catalog::new(dir.path().to_path_buf(), engine, None));
    catalog.reload();
    let sim = Sim::new(
        &config,
        catalog,
        chrono::Utc::now().timestamp_millis(),
        runtime,
    )
    .expect("sim");
    let mut seen = Vec::new();
    let mut steps = Vec::new();
    for (name, labels, status) in admission_cases() {
        let runs = sim.alert(name, status, labels.clone()).expect("alert");
        // The incident this alert went to: the one with its key (computed by the same
        // rules the simulation used; only one incident per key exists in these cases).
        let mut all: BTreeMap<String, String> = serde_json::from_value(labels).expect("labels");
        all.insert("alertname".into(), name.into());
        let alert = runbookd::triggers::alertmanager::Alert {
            status: runbookd::triggers::alertmanager::AlertStatus::parse(status).expect("status"),
            fingerprint: runbookd::dispatch::admission::fingerprint(&all),
            labels: all,
            annotations: Default::default(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
        };
        let key = runbookd::dispatch::admission::incident_key(&alert, &config.alerts);
        let incident = sim
            .incidents()
            .expect("incidents")
            .into_iter()
            .find(|i| i.key == key)
            .map(|i| i.id);
        steps.push((runs.len(), index_of(&mut seen, incident)));
    }
    let incidents = sim.incidents().expect("incidents");
    let statuses = seen
        .iter()
        .map(|id| {
            incidents
                .iter()
                .find(|i| i.id == *id)
                .map(|i| i.status.as_str().to_string())
                .unwrap_or_else(|| "missing".into())
        })
        .collect();
    (steps, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_the_simulation_admit_alike() {
    for (labels, toml) in [
        (vec![], "[]"),
        (vec!["service".to_string()], "[\"service\"]"),
    ] {
        let handle = tokio::runtime::Handle::current();
        let sim = tokio::task::spawn_blocking(move || admitted_by_simulation(labels, handle))
            .await
            .expect("simulation");
        let daemon = admitted_by_daemon(toml).await;
        assert_eq!(
            daemon, sim,
            "incident_key_labels = {toml}: daemon vs simulation"
        );
        // And what both agree on is what the rules say.
        let expected_steps = if toml == "[]" {
            vec![
                (1, Some(0)),
                (1, Some(1)),
                (0, Some(0)),
                (0, Some(0)),
                (0, None),
                (1, Some(0)),
            ]
        } else {
            vec![
                (1, Some(0)),
                (0, Some(0)),
                (0, Some(0)),
                (0, Some(0)),
                (0, None),
                (1, Some(0)),
            ]
        };
        assert_eq!(daemon.0, expected_steps, "incident_key_labels = {toml}");
        assert_eq!(daemon.1[0], "resolved");
    }
}

#[tokio::test]
async fn a_simulated_stripe_on_a_virtual_clock_is_not_throttled_in_real_time() {
    // `max_requests_per_second` guards Stripe's quota on real time; on a virtual clock it
    // would turn a 500-payment simulated reconcile into 20 s of waiting.
    let s = stripes().await;
    let mut cfg = s.real.config().clone();
    cfg.max_requests_per_second = 1;
    let clock = Clock::virtual_at(chrono::Utc::now().timestamp_millis());
    let wire = Arc::new(SimStripeWire {
        world: s.world.clone(),
    });
    let simulated = Stripe::with_wire(&cfg, wire, reqwest::Client::new(), clock);
    let pings = async {
        for _ in 0..5 {
            assert_eq!(simulated.ping().await.result, "connected");
        }
    };
    tokio::time::timeout(Duration::from_secs(2), pings)
        .await
        .expect("five simulated requests at a 1/s limit must not wait 4 s");
}

#[tokio::test]
async fn signed_probes_are_judged_alike_by_the_app_over_http_and_the_simulated_app() {
    use runbookd::primitives::webhooks::{signed, HttpEndpoint, WebhookEndpoint};
    use runbookd::sim::backends::stripe::SimEndpoint;
    let s = stripes().await;
    let url = format!("http://{}/app/webhook", s.fake.addr);
    let http = HttpEndpoint {
        http: reqwest::Client::new(),
        url: Some(url.clone()),
    };
    let sim = SimEndpoint {
        world: s.world.clone(),
        url: url.clone(),
    };
    let held = "whsec_runbookd_holds_this";
    // (the app's secret, the endpoint's status for everything else)
    let cases: [(&str, Option<u16>); 3] = [
        (held, None),
        ("whsec_rotated_away", None),
        (held, Some(500)),
    ];
    for (app_secret, status) in cases {
        s.fake.behave(|b| {
            b.app_secret = Some(app_secret.into());
            b.webhook_status = status;
        });
        {
            let mut w = s.world.state();
            w.app_webhook_secret = Some(app_secret.into());
            w.webhook_endpoint = Some(status.unwrap_or(400));
        }
        let mut answers = Vec::new();
        // Each side is signed at the time of the clock it is judged by.
        let sides: [(&dyn WebhookEndpoint, i64); 2] = [
            (&http, chrono::Utc::now().timestamp()),
            (&sim, s.world.clock().now_ms() / 1000),
        ];
        for (endpoint, t) in sides {
            let body = signed::probe_event("evt_parity", t);
            let header = signed::sign(body.as_bytes(), held.as_bytes(), t);
            let p = endpoint.signed_probe(&url, body, header).await;
            answers.push((p.status, p.ok, p.verdict));
        }
        assert_eq!(
            answers[0], answers[1],
            "app secret {app_secret}, endpoint {status:?} (HTTP, then simulated)"
        );
    }
}
