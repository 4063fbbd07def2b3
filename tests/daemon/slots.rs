//! `[playbooks] max_concurrent_runs`: no more scripts act on the outside world at once than
//! the slots allow, whatever is queued — and every queued run still runs once slots free.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::helpers::{serve_on_loopback, Daemon, Db, Options, Workspace};

/// The outside world: a webhook endpoint that holds every request until the test opens it,
/// counting how many are held at once.
#[derive(Clone)]
struct Endpoint {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    arrived: mpsc::UnboundedSender<()>,
    open: watch::Receiver<bool>,
}

async fn hold(State(e): State<Endpoint>) -> StatusCode {
    let now = e.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    e.most.fetch_max(now, Ordering::SeqCst);
    let _ = e.arrived.send(());
    let mut open = e.open.clone();
    let _ = open.wait_for(|o| *o).await;
    e.in_flight.fetch_sub(1, Ordering::SeqCst);
    StatusCode::BAD_REQUEST
}

#[tokio::test]
async fn no_more_runs_act_at_once_than_max_concurrent_runs() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (open_tx, open_rx) = watch::channel(false);
    let endpoint = Endpoint {
        in_flight: Arc::default(),
        most: Arc::default(),
        arrived: arrived_tx,
        open: open_rx,
    };
    let addr = serve_on_loopback(
        Router::new()
            .route("/hook", post(hold))
            .with_state(endpoint.clone()),
    )
    .await;

    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("act", "fn run(event) { webhooks::probe() }\n");
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: format!("[stripe]\nwebhook_url = \"http://{addr}/hook\"\n"),
            env: vec![("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "2".into())],
            ..Options::default()
        },
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(d.start_run("act", json!({})).await);
    }
    // Two scripts reach the endpoint and are held there ...
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("two runs act")
            .expect("endpoint");
    }
    // ... and while they are, no third one starts: the other three stay queued.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), arrived.recv())
            .await
            .is_err(),
        "a third run acted with max_concurrent_runs = 2"
    );
    let mut queued = 0;
    for id in &ids {
        let (_, run) = d.get(&format!("/api/v1/runs/{id}")).await;
        if run["status"] == "queued" {
            queued += 1;
        }
    }
    assert_eq!(queued, 3, "runs not started wait queued");

    open_tx.send(true).expect("open");
    for id in &ids {
        let run = d
            .run_reaching(id, "succeeded", Duration::from_secs(20))
            .await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["result"]["status"], 400, "{run}");
    }
    assert_eq!(
        endpoint.most.load(Ordering::SeqCst),
        2,
        "at most two at once, and both slots used"
    );
}
