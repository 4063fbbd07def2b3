use crate::{
    event::{AlertFacts, RunRequest},
    store::{IncidentStatus, RunRecord, Store},
};

fn run_for(incident: &str, queued_at: i64) -> RunRecord {
    let alert = AlertFacts {
        name: "A".into(),
        ..Default::default()
    };
    RunRecord::queued(
        RunRequest::alert("pb", alert, incident, "test"),
        "v1",
        queued_at,
    )
}

/// What a batch opens, resolves and queues is answered from memory before the commit,
/// written by it, and read back in bulk by the next batch.
#[tokio::test]
async fn a_batch_answers_for_its_own_writes_and_reads_the_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::connect(&url, 2).await.expect("store");
    let labels = serde_json::json!({ "alertname": "A" });

    let mut batch = store.batch().await.expect("batch");
    batch.load_keys(["k1", "k2"]).await.expect("load");
    assert_eq!(batch.open_incident_by_key("k1").await.expect("read"), None);
    let k1 = batch.create_incident("k1", "alert:A", "first", &labels, 1_000);
    assert_eq!(
        batch.open_incident_by_key("k1").await.expect("read"),
        Some(k1.clone())
    );
    assert!(batch
        .resolve_incident(&k1.id, "alertmanager", "gone")
        .await
        .expect("resolve"));
    assert!(!batch
        .resolve_incident(&k1.id, "alertmanager", "gone")
        .await
        .expect("resolve"));
    assert_eq!(batch.open_incident_by_key("k1").await.expect("read"), None);
    let k2 = batch.create_incident("k2", "alert:A", "second", &labels, 2_000);
    assert_eq!(
        batch.last_incident_run(&k2.id, "pb").await.expect("runs"),
        None
    );
    batch.insert_run(&run_for(&k2.id, 3_000));
    assert_eq!(
        batch.last_incident_run(&k2.id, "pb").await.expect("runs"),
        Some(("queued".into(), 3_000))
    );
    // A key nobody loaded is read (and locked) when first asked for.
    assert_eq!(batch.open_incident_by_key("k3").await.expect("read"), None);
    batch.commit().await.expect("commit");

    let stored = store.get_incident(&k1.id).await.expect("get").expect("k1");
    assert_eq!(stored.status, IncidentStatus::Resolved);
    assert_eq!(stored.resolved_by.as_deref(), Some("alertmanager"));
    let kinds: Vec<String> = store
        .timeline(&k1.id)
        .await
        .expect("timeline")
        .into_iter()
        .map(|l| l.kind)
        .collect();
    assert_eq!(kinds, ["opened", "resolved"]);

    let mut batch = store.batch().await.expect("batch");
    batch.load_keys(["k2", "k2", "k1"]).await.expect("load");
    let open = batch.open_incident_by_key("k2").await.expect("read");
    assert_eq!(
        open.map(|i| (i.id, i.opened_at)),
        Some((k2.id.clone(), 2_000))
    );
    assert_eq!(batch.open_incident_by_key("k1").await.expect("read"), None);
    assert_eq!(
        batch.last_incident_run(&k2.id, "pb").await.expect("runs"),
        Some(("queued".into(), 3_000))
    );
    assert_eq!(
        batch
            .last_incident_run(&k2.id, "other")
            .await
            .expect("runs"),
        None
    );
    assert!(batch
        .resolve_incident(&k2.id, "op", "done")
        .await
        .expect("resolve"));
    assert_eq!(batch.open_incident_by_key("k2").await.expect("read"), None);
    batch.commit().await.expect("commit");
    assert_eq!(store.open_incident_by_key("k2").await.expect("read"), None);
}
