//! Primitive benchmarks (`cargo bench --bench primitives`), needing PostgreSQL and Redis
//! (scripts/test starts them; URLs from RUNBOOKD_TEST_POSTGRES_URL / RUNBOOKD_TEST_REDIS_URL).
//!
//! - reconcile 10,000 stale payments against the fake Stripe answering in 20 ms: with a
//!   100 requests/s limit, and with no limit at concurrency 32;
//! - breaker state reads per second from one client (django preset, real Redis).

#[path = "../tests/daemon/fake_stripe.rs"]
#[allow(dead_code)]
mod fake_stripe;

use std::time::{Duration, Instant};

use runbookd::{
    config::Config,
    primitives::{
        reconcile::{reconcile, Auditor, Options},
        Services,
    },
};
use sqlx::{Connection, Executor};

async fn app_database(payments: usize) -> String {
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let name = format!("runbookd_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create db");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin)
    );
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::raw_sql(include_str!("../tests/fixtures/payments_app.sql"))
        .execute(&pool)
        .await
        .expect("schema");
    sqlx::query(
        "INSERT INTO payments_payment (id, account_id, processor_id, amount, payment_method, status, \
         processor_ref, idempotency_key, metadata, created_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 10.00, 'card', 'pending', \
         'pi_' || i, 'idem_' || i, '{}'::jsonb, now() - interval '2 hours' FROM generate_series(1, $1) i",
    )
    .bind(payments as i64)
    .execute(&pool)
    .await
    .expect("payments");
    url
}

async fn reconcile_bench(
    label: &str,
    url: &str,
    fake: &fake_stripe::FakeStripe,
    rps: u32,
    concurrency: usize,
    n: usize,
) {
    let mut config = Config::default();
    config.payments.database_url = Some(url.to_string());
    config.stripe.api_base = format!("http://{}", fake.addr);
    config.stripe.max_requests_per_second = rps;
    config.stripe.api_key_env = Some("RUNBOOKD_BENCH_STRIPE_KEY".into());
    config
        .breakers
        .get_mut("stripe")
        .expect("stripe breaker")
        .store = runbookd::config::BreakerStoreKind::Memory;
    let services = Services::from_config(&config, None).expect("services");
    let opts = Options {
        limit: n as i64,
        concurrency,
        check_failed_within: None,
        dry_run: true,
        ..Default::default()
    };
    let auditor = Auditor {
        store: None,
        run_id: None,
        actor: "bench".into(),
        fence: None,
    };
    let before = fake.requests().len();
    let holds_before = fake.holds().len();
    let connections_before = fake.connections_accepted();
    let started = Instant::now();
    let report = reconcile(&services, &opts, &auditor)
        .await
        .expect("reconcile");
    let took = started.elapsed();
    let requests = fake.requests();
    let ours = &requests[before..];
    let sent = ours.len();
    assert_eq!(report.checked, n, "{report:?}");
    // Sustained rate: requests over the span from the first to the last one Stripe saw
    // (the call's wall time also includes loading 10,000 rows from PostgreSQL).
    let span = ours.last().expect("requests").1 - ours.first().expect("requests").1;
    // What the fake actually held each answer for: the ideal rate is concurrency / that.
    let holds = fake.holds();
    let holds = &holds[holds_before..];
    let mean_hold = holds.iter().sum::<Duration>() / holds.len().max(1) as u32;
    println!(
        "reconcile {n} payments, {label}: {sent} Stripe requests over {} TCP connections; answers held {:.2} ms on average; sustained {:.1} req/s; whole call {:.2} s ({:.1} req/s); {} errors",
        fake.connections_accepted() - connections_before,
        mean_hold.as_secs_f64() * 1000.0,
        (sent - 1) as f64 / span.as_secs_f64(),
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        report.errors.len()
    );
}

#[tokio::main]
async fn main() {
    std::env::set_var("RUNBOOKD_BENCH_STRIPE_KEY", fake_stripe::GOOD_KEY);
    let n = 10_000;
    let url = app_database(n).await;
    let fake = fake_stripe::FakeStripe::start().await;
    for i in 1..=n {
        fake.intent(&format!("pi_{i}"), "processing", "x");
    }
    let latency_ms: u64 = std::env::var("RUNBOOKD_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    fake.behave(|b| b.latency = Duration::from_millis(latency_ms));
    println!("runbookd primitives benchmark — fake Stripe latency 20 ms");
    // RUNBOOKD_BENCH_QUICK=1 skips the 100-second rate-limited run.
    if std::env::var("RUNBOOKD_BENCH_QUICK").is_err() {
        reconcile_bench("limit 100 req/s, concurrency 32", &url, &fake, 100, 32, n).await;
    }
    reconcile_bench(
        "no limit, concurrency 32 (ideal 1,600 req/s)",
        &url,
        &fake,
        0,
        32,
        n,
    )
    .await;

    // Breaker reads from one client.
    let redis = std::env::var("RUNBOOKD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut config = Config::default();
    config.redis.url = Some(redis);
    config
        .breakers
        .get_mut("stripe")
        .expect("stripe")
        .key_prefix = format!("bench{}", uuid::Uuid::now_v7().simple());
    let services = Services::from_config(&config, None).expect("services");
    let breakers = services.breakers.clone();
    breakers
        .record_failure("stripe", None)
        .await
        .expect("warm up");
    let reads = 20_000;
    let started = Instant::now();
    for _ in 0..reads {
        breakers.read("stripe").await.expect("read");
    }
    let took = started.elapsed();
    println!(
        "breaker state reads, one client, django preset on Redis: {reads} in {:.2} s = {:.0} reads/s",
        took.as_secs_f64(),
        reads as f64 / took.as_secs_f64()
    );
    breakers.reset("stripe", None).await.expect("clean up");
}
