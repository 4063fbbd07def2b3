//! Step 4, the Celery workers: runbookd reads a real Celery worker's active and reserved
//! `process_payment` tasks through Celery's own remote control, and the payment queue's
//! depth, on a real Redis broker — healthy, hung (`kill -STOP`) and dead (`kill -9`) — and the
//! simulated workers answer the same questions alike.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    celery_app::CeleryApp,
    fake_stripe::GOOD_KEY,
    helpers::{redis, Daemon},
    outage::Debtflow,
};
use runbookd::primitives::celery::{Celery, WorkersReport};

/// The value of `series` (a full series name with labels; an unlabelled one is written
/// `name{}`) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{series} ")) || l.starts_with(&format!("{series}{{}} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the daemon's key metrics show `want` for every series.
async fn wait_metrics(d: &Daemon, want: &[(&str, f64)]) {
    let mut text = String::new();
    for _ in 0..300 {
        text = d.metrics().await;
        if want.iter().all(|(s, v)| sample(&text, s) == Some(*v)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics never reached {want:?}:\n{text}");
}

/// runbookd's reply lists and bindings for this app's control exchange that are left over.
async fn leftovers(app: &CeleryApp) -> (i64, Vec<String>) {
    let mut r = redis().await;
    let bindings: i64 = redis::cmd("SCARD")
        .arg(format!(
            "_kombu.binding.reply.{}.pidbox",
            app.control_exchange
        ))
        .query_async(&mut r)
        .await
        .expect("scard");
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*.reply.{}.pidbox*", app.control_exchange))
        .query_async::<Vec<String>>(&mut r)
        .await
        .expect("keys")
        .into_iter()
        .filter(|k| !k.starts_with("_kombu."))
        .collect();
    (bindings, lists)
}

#[tokio::test]
async fn the_diagnosis_reads_a_real_workers_payment_tasks_hung_or_dead() {
    let app = CeleryApp::new();
    let mut worker = app.start_worker("celery@worker-1");
    // One runs, one is prefetched (prefetch multiplier 1), one waits in the queue.
    app.enqueue(&["pay_1", "pay_2", "pay_3"]);
    let w = Debtflow::new().await;
    let mut opts = w.options("", GOOD_KEY);
    opts.extra_config.push_str(&app.config());
    opts.env
        .push(("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "200ms".into()));
    let d = Daemon::start(&w.ws, &opts);
    let queue_series = format!("runbookd_celery_queue_length{{queue=\"{}\"}}", app.queue);
    wait_metrics(
        &d,
        &[
            (queue_series.as_str(), 1.0),
            ("runbookd_celery_workers", 1.0),
            ("runbookd_celery_workers_unanswered", 0.0),
        ],
    )
    .await;

    let (status, run) = d
        .run_wait("payment_processor_outage", json!({"dry_run": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    let c = &run["result"]["diagnosis"]["celery"];
    assert_eq!(c["queued"], 1, "{c}");
    assert_eq!(c["queues"], json!([{"queue": app.queue, "length": 1}]));
    let workers = &c["workers"];
    assert_eq!(workers["alive"], 1, "{workers}");
    assert_eq!(workers["unanswered"], 0);
    assert_eq!(workers["payments_active"], 1);
    assert_eq!(workers["payments_reserved"], 1);
    assert_eq!(
        workers["workers"][0]["name"], "celery@worker-1",
        "{workers}"
    );
    let tasks = workers["payment_tasks"].as_array().expect("tasks");
    assert_eq!(
        tasks
            .iter()
            .map(|t| (t["state"].as_str(), t["args"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("active"), Some("[\"pay_1\"]")),
            (Some("reserved"), Some("[\"pay_2\"]"))
        ],
        "{tasks:?}"
    );
    assert!(tasks[0]["started"].is_string() && tasks[1]["started"].is_null());
    let summary = run["result"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(
            "Celery: 1 worker(s) answer, 1 process_payment active / 1 reserved, 1 queued"
        ),
        "{summary}"
    );

    // Hung: the main process stops serving remote control; Redis still has it subscribed.
    worker.signal("STOP");
    let (_, run) = d
        .run_wait("payment_processor_outage", json!({"dry_run": true}))
        .await;
    let workers = &run["result"]["diagnosis"]["celery"]["workers"];
    assert_eq!(
        (&workers["alive"], &workers["unanswered"]),
        (&json!(0), &json!(1)),
        "{workers}"
    );
    assert!(
        run["result"]["scenarios"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("workers"))),
        "{run}"
    );
    worker.signal("CONT");

    // Dead: no subscriber hears the broadcast; the prefetched task is unacknowledged (kombu
    // restores it after its visibility timeout), the third still waits.
    worker.kill();
    wait_metrics(
        &d,
        &[
            ("runbookd_celery_workers", 0.0),
            ("runbookd_celery_workers_unanswered", 0.0),
        ],
    )
    .await;
    let (_, run) = d
        .run_wait("payment_processor_outage", json!({"dry_run": true}))
        .await;
    let summary = run["result"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("Celery: NO worker answers, 1 queued"),
        "{summary}"
    );
    let logs = d.logs();
    assert!(
        logs.contains("no Celery worker is running")
            && logs.contains("1 task(s) wait in the queue"),
        "the finding is told"
    );
    for id in ["pay_1", "pay_2", "pay_3"] {
        app.release(id).await;
    }
    // Every broadcast (the runs', the key metrics' every 200 ms, those that waited out the
    // hung worker) removed its reply binding and list.
    let mut d = d;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(
        leftovers(&app).await,
        (0, vec![]),
        "reply bindings and lists removed"
    );
}

/// Production's report, with what differs by nature between two worlds (task ids, start
/// times) reduced to whether it is there.
fn comparable(r: WorkersReport) -> WorkersReport {
    WorkersReport {
        payment_tasks: r
            .payment_tasks
            .into_iter()
            .map(|mut t| {
                t.id = if t.id.is_empty() { "" } else { "id" }.into();
                t.started = t.started.map(|_| "started".into());
                t
            })
            .collect(),
        ..r
    }
}

async fn wait_for(celery: &Celery, what: &str, done: impl Fn(&WorkersReport, i64) -> bool) {
    let mut last = None;
    for _ in 0..200 {
        let r = celery.workers().await.expect("workers");
        let queued = celery.queues().await.expect("queues")[0].length;
        if done(&r, queued) {
            return;
        }
        last = Some((r, queued));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the real worker never reached {what}: {last:?}");
}

#[tokio::test]
async fn a_real_worker_and_the_simulated_workers_answer_alike() {
    use runbookd::sim::change::Change;
    let app = CeleryApp::new();
    let mut cfg = runbookd::config::CeleryConfig {
        broker_url: Some(crate::helpers::redis_url()),
        queue: app.queue.clone(),
        control_exchange: app.control_exchange.clone(),
        inspect_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let real = Celery::new(&cfg, Default::default(), runbookd::clock::Clock::Real);
    let config = runbookd::config::Config {
        celery: cfg.clone(),
        ..Default::default()
    };
    let world = runbookd::sim::World::new(
        runbookd::clock::Clock::virtual_at(chrono::Utc::now().timestamp_millis()),
        &config,
    );
    let sim = Celery::with_broker(
        &cfg,
        Arc::new(runbookd::sim::backends::celery::SimBroker {
            world: world.clone(),
        }),
    );
    let alike = |what: &'static str| {
        let (real, sim) = (real.clone(), sim.clone());
        async move {
            let (r, s) = (
                real.workers().await.expect("real"),
                sim.workers().await.expect("sim"),
            );
            assert_eq!(comparable(r), comparable(s), "workers: {what}");
            assert_eq!(
                real.queues().await.expect("real"),
                sim.queues().await.expect("sim"),
                "queues: {what}"
            );
        }
    };
    let apply = |c: Change| world.apply(&c).map(|_| ()).expect("change");

    // No worker at all.
    apply(Change::CeleryWorkers(0));
    alike("no worker").await;

    // One idle worker.
    let mut worker = app.start_worker("celery@worker-1");
    // "ready." is logged before the worker's remote control has subscribed to the control
    // exchange; a broadcast published in between reaches nobody.
    wait_for(&real, "one worker answering", |r, _| r.alive == 1).await;
    apply(Change::CeleryWorkers(1));
    alike("one idle worker").await;

    // One task running, one prefetched, one queued.
    app.enqueue(&["pay_sim_1", "pay_sim_2", "pay_sim_3"]);
    wait_for(&real, "1 active, 1 reserved, 1 queued", |r, q| {
        r.payments_active == 1 && r.payments_reserved == 1 && q == 1
    })
    .await;
    apply(Change::PaymentTasks {
        active: 1,
        reserved: 1,
    });
    apply(Change::QueuedPayments(1));
    alike("busy").await;

    // Hung.
    worker.signal("STOP");
    apply(Change::WorkerHung);
    alike("hung").await;
    worker.signal("CONT");

    // Dead (the prefetched task is the broker's again only after kombu's visibility timeout).
    worker.kill();
    wait_for(&real, "no subscriber", |r, _| {
        r.alive == 0 && r.unanswered == 0
    })
    .await;
    apply(Change::CeleryWorkers(0));
    alike("dead").await;

    // The broker gone: both say it is unavailable.
    cfg.broker_url = Some(format!("redis://127.0.0.1:{}", crate::helpers::free_port()));
    let gone = Celery::new(&cfg, Default::default(), runbookd::clock::Clock::Real);
    apply(Change::Celery(Some(true)));
    for (r, s) in [
        (
            gone.queues().await.map(|_| ()),
            sim.queues().await.map(|_| ()),
        ),
        (
            gone.workers().await.map(|_| ()),
            sim.workers().await.map(|_| ()),
        ),
    ] {
        let (r, s) = (r.expect_err("real"), s.expect_err("sim"));
        assert!(
            matches!(r, runbookd::primitives::celery::CeleryError::Broker(_))
                && matches!(s, runbookd::primitives::celery::CeleryError::Broker(_)),
            "{r} / {s}"
        );
    }
    for id in ["pay_sim_1", "pay_sim_2", "pay_sim_3"] {
        app.release(id).await;
    }
}

/// Two workers started with one node name (containers sharing a hostname; Celery only warns)
/// both answer: two alive, neither taken for hung.
#[tokio::test]
async fn two_real_workers_with_one_name_are_two_alive() {
    let app = CeleryApp::new();
    let _a = app.start_worker("celery@shared-host");
    let _b = app.start_worker("celery@shared-host");
    let cfg = runbookd::config::CeleryConfig {
        broker_url: Some(crate::helpers::redis_url()),
        queue: app.queue.clone(),
        control_exchange: app.control_exchange.clone(),
        ..Default::default()
    };
    let celery = Celery::new(&cfg, Default::default(), runbookd::clock::Clock::Real);
    // Both logged "ready." before their remote control subscribed: wait until both answer.
    wait_for(&celery, "both answering", |r, _| r.alive == 2).await;
    let r = celery.workers().await.expect("workers");
    assert_eq!((r.alive, r.unanswered), (2, 0), "{r:?}");
    assert_eq!(r.workers.len(), 1);
    assert_eq!(r.workers[0].instances, 2);
    assert_eq!(r.workers[0].active, Some(0));
}
