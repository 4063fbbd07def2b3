//! Escalation evaluator benchmark (`cargo bench --bench escalation`): the cost of one pass
//! over 1,000 / 10,000 / 100,000 open incidents with the runbook's table, on SQLite and
//! (when it answers at `RUNBOOKD_TEST_POSTGRES_URL`) PostgreSQL.
//!
//! "steady" passes find nothing to fire (the common case: every incident evaluated, every
//! condition false); "all fire" is the first pass over incidents all older than 30 min, so
//! every one of them fires L2 (a fire, its notification and its playbook run recorded in
//! one transaction each) — the worst case after, say, an evaluator outage.

use std::time::{Duration, Instant};

use runbookd::{escalation, store::Store};
use sqlx::Connection;

mod support;

/// Inserts `n` open incidents opened `age_s` ago, straight into the schema (the bench
/// measures the evaluator, not ingestion).
async fn seed(url: &str, n: usize, age_s: i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let opened = now - age_s * 1000;
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut sql = String::from(
            "INSERT INTO incidents (id, incident_key, source, title, labels, status, facts, opened_at, updated_at) VALUES ",
        );
        for (k, _) in chunk.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{}', 'bench:{}', 'alert:PaymentsPendingTooLong', 'bench', '{{}}', 'open', '{{}}', {opened}, {now})",
                uuid::Uuid::now_v7(),
                uuid::Uuid::now_v7().simple()
            ));
        }
        sqlx::query(&sql).execute(&mut *tx).await.expect("seed");
    }
    tx.commit().await.expect("commit");
}

async fn pass(esc: &escalation::Escalation, store: &Store) -> (Duration, usize) {
    let t = Instant::now();
    let runs = runbookd::schedulers::escalation::evaluate(esc, store)
        .await
        .expect("pass");
    (t.elapsed(), runs.runs.len())
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let esc = escalation::Escalation::load(dir.path().join("none.toml"), Vec::new())
        .expect("the shipped table");
    println!("runbookd escalation evaluator benchmark — the runbook's table (4 levels)");
    println!(
        "{:<10} {:>9} {:>12} {:>12} {:>14}",
        "store", "open", "steady p50", "steady max", "all fire (L2)"
    );
    for n in [1_000usize, 10_000, 100_000] {
        let mut stores = vec![(
            "sqlite",
            format!("sqlite://{}", dir.path().join(format!("s{n}.db")).display()),
        )];
        if let Some(pg) = support::fresh_postgres().await {
            stores.push(("postgres", pg));
        }
        for (name, url) in stores {
            let store = Store::connect(&url, 8).await.expect("store");
            seed(&url, n, 60).await;
            let mut steady = Vec::new();
            for _ in 0..5 {
                let (took, fired) = pass(&esc, &store).await;
                assert_eq!(fired, 0, "nothing is due");
                steady.push(took);
            }
            steady.sort();
            // The worst case, at 10k only: a second set of incidents 31 minutes old.
            let all_fire = if n == 10_000 {
                seed(&url, n, 31 * 60).await;
                let (took, fired) = pass(&esc, &store).await;
                assert_eq!(
                    fired, n,
                    "every old incident fires L2 and queues its playbook"
                );
                format!("{:.0} ms", took.as_secs_f64() * 1000.0)
            } else {
                "-".into()
            };
            println!(
                "{:<10} {:>9} {:>9.0} ms {:>9.0} ms {:>14}",
                name,
                n,
                steady[steady.len() / 2].as_secs_f64() * 1000.0,
                steady[steady.len() - 1].as_secs_f64() * 1000.0,
                all_fire
            );
            store.close().await;
        }
    }
}
