//! Retention against the real daemon: finished history past `[state] retain_*` goes, in the
//! background; what is still running or open stays whatever its age; the audit trail is kept
//! longer than the runs it names.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Daemon, Db, Options, Workspace};

#[tokio::test]
async fn retention_prunes_finished_history_and_keeps_what_is_running_or_open() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("quick", "fn run(event) { notify(\"log\", \"done\"); 1 }\n");
    ws.write_playbook("slow", "fn run(event) { sleep(8); 2 }\n");
    ws.write_playbook(
        "watch",
        "fn triggers() { [#{ alert: \"StaysOpen\" }, #{ alert: \"GetsResolved\" }] }\nfn run(event) { 3 }\n",
    );
    let env = [
        ("RETAIN_RUNS", "1s"),
        ("RETAIN_INCIDENTS", "1s"),
        ("RETAIN_ALERTS", "1s"),
        ("RETAIN_NOTIFICATIONS", "1s"),
        ("PRUNE_INTERVAL", "200ms"),
    ]
    .map(|(k, v)| (format!("RUNBOOKD_STATE__{k}"), v.to_string()))
    .to_vec();
    let d = Daemon::start(
        &ws,
        &Options {
            env,
            ..Default::default()
        },
    );
    let slow = d.start_run("slow", json!({})).await;
    let mut quick = Vec::new();
    for _ in 0..2 {
        let (s, run) = d.run_wait("quick", json!({})).await;
        assert_eq!(s, 200, "{run}");
        quick.push(run["id"].as_str().expect("id").to_string());
    }
    let open = crate::alerts::notification(&[("StaysOpen", "fp-open", "firing")]);
    let (_, a) = crate::alerts::post(&d, &open).await;
    let open_incident = a["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let (_, b) = crate::alerts::post(
        &d,
        &crate::alerts::notification(&[("GetsResolved", "fp-res", "firing")]),
    )
    .await;
    let resolved_incident = b["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    crate::alerts::post(
        &d,
        &crate::alerts::notification(&[("GetsResolved", "fp-res", "resolved")]),
    )
    .await;

    // Pruned in the background, reported by table.
    let start = std::time::Instant::now();
    let metrics = loop {
        let m = d.metrics().await;
        if m.contains("runbookd_pruned_rows_total{table=\"incidents\"} 1")
            && m.contains("runbookd_pruned_rows_total{table=\"runs\"}")
            || start.elapsed() > Duration::from_secs(15)
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains("runbookd_pruned_rows_total{table=\"incidents\"} 1"),
        "{metrics}"
    );
    for id in &quick {
        assert_eq!(
            d.get(&format!("/api/v1/runs/{id}")).await.0,
            404,
            "finished run {id} past retention"
        );
    }
    assert_eq!(
        d.get(&format!("/api/v1/incidents/{resolved_incident}"))
            .await
            .0,
        404
    );
    // Older than the retention, but not finished: kept.
    let (s, run) = d.get(&format!("/api/v1/runs/{slow}")).await;
    assert_eq!((s, run["status"].as_str()), (200, Some("running")), "{run}");
    let (s, inc) = d.get(&format!("/api/v1/incidents/{open_incident}")).await;
    assert_eq!((s, inc["status"].as_str()), (200, Some("open")), "{inc}");
    // The audit trail outlives the runs it names (retain_audit is 365 days).
    let (_, audit) = d.get("/api/v1/audit?limit=100").await;
    let names_pruned = audit.as_array().map(|a| {
        a.iter()
            .filter(|e| quick.iter().any(|q| e["run_id"] == q.as_str()))
            .count()
    });
    assert_eq!(names_pruned, Some(2), "{audit}");
    // The slow run finishes normally afterwards: retention never touched it. Once finished it
    // is past retention itself and may be pruned at the next tick (200 ms), so its success is
    // read from the run counter, which no pruning changes.
    let start = std::time::Instant::now();
    let succeeded = r#"runbookd_runs_total{playbook="slow",status="succeeded"} 1"#;
    let metrics = loop {
        let m = d.metrics().await;
        if m.contains(succeeded) || start.elapsed() > Duration::from_secs(20) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains(succeeded), "{metrics}");
}
