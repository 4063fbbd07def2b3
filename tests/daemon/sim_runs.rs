//! The simulation's runs are the dispatcher's: recorded, leased, marked and finished by the
//! daemon's own code on the virtual clock, with the events the daemon's triggers build.

use std::sync::Arc;

use runbookd::{
    config::Config,
    engine,
    sim::{driver::Sim, scenario::Scenario},
    store::RunStatus,
};

const START: i64 = 1_780_000_000_000; // 2026-05-28T20:26:40Z

fn sim_with(
    playbooks: &[(&str, &str)],
    runtime: tokio::runtime::Handle,
) -> (Sim, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    for (name, source) in playbooks {
        std::fs::write(dir.path().join(format!("{name}.rhai")), source).expect("playbook");
    }
    let config = Config::default();
    let engine = Arc::new(engine::build(&config.playbooks, dir.path()));
    let catalog = Arc::new(engine::Catalog::new(dir.path().to_path_buf(), engine, None));
    catalog.reload();
    let sim = Sim::new(&config, catalog, START, runtime).expect("sim");
    (sim, dir)
}

fn in_simulation<T: Send + 'static>(
    f: impl FnOnce(tokio::runtime::Handle) -> T + Send + 'static,
) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    std::thread::spawn(move || f(handle))
        .join()
        .expect("simulation thread")
}

#[test]
fn simulated_runs_are_recorded_by_the_dispatcher_on_the_virtual_clock() {
    in_simulation(|rt| {
        let (sim, _dir) = sim_with(
            &[(
                "responder",
                "fn triggers() { [#{ alert: \"PaymentFailureRateHigh\" }] }\n\
                 fn run(event) { sleep(90); #{ attempt: event.attempt } }\n",
            )],
            rt.clone(),
        );
        let runs = sim
            .alert(
                "PaymentFailureRateHigh",
                "firing",
                serde_json::json!({"service": "payments"}),
            )
            .expect("alert");
        assert_eq!(runs.len(), 1, "{runs:?}");
        let record = rt
            .block_on(sim.store.get_run(&runs[0].id))
            .expect("store")
            .expect("the run is in the simulation's store");
        assert_eq!(record.status, RunStatus::Succeeded);
        assert_eq!(record.trigger.kind.to_string(), "alert");
        assert_eq!(record.trigger.actor, "simulation");
        assert_eq!(
            record.replica.as_deref(),
            Some("simulation"),
            "run under the dispatcher's lease"
        );
        assert_eq!(record.attempt, 1);
        // The dispatcher stamps times from the store's clock: virtual, and the script's
        // sleep moved it.
        assert_eq!(record.queued_at, START);
        assert_eq!(record.started_at, Some(START));
        assert_eq!(record.finished_at, Some(START + 90_000));
        assert_eq!(
            record.result,
            Some(serde_json::json!({"attempt": 1})),
            "the dispatcher tells the script its attempt"
        );
        assert_eq!(runs[0].finished_ms, START + 90_000);
        // The incident it ran for is the daemon's record too: the alert's row names it.
        let incident = record.event.incident.clone().expect("incident");
        let opened = rt
            .block_on(sim.store.get_incident(&incident))
            .expect("store")
            .expect("incident");
        assert_eq!(opened.opened_at, START);
    });
}

#[test]
fn simulated_cron_ticks_are_the_cron_triggers_events() {
    in_simulation(|rt| {
        let (sim, dir) = sim_with(
            &[(
                "tick",
                "fn triggers() { [#{ cron: \"0 * * * * *\" }] }\nfn run(event) { event.params.scheduled_for }\n",
            )],
            rt,
        );
        let file = dir.path().join("three-minutes.toml");
        std::fs::write(
            &file,
            "title = \"three minutes\"\nduration = \"3m\"\nalerts = false\ncron = [\"tick\"]\n",
        )
        .expect("scenario");
        let scenario = Scenario::load(&file).expect("scenario");
        sim.play(&scenario).expect("play");
        let runs = sim.runs();
        let ticks: Vec<&str> = runs.iter().filter_map(|r| r.result.as_str()).collect();
        // START is 20:26:40: the ticks at :27, :28 and :29 fire, each once, with the
        // `scheduled_for` the daemon's cron trigger gives (UTC by default).
        assert_eq!(
            ticks,
            vec![
                "2026-05-28T20:27:00+00:00",
                "2026-05-28T20:28:00+00:00",
                "2026-05-28T20:29:00+00:00"
            ],
            "{runs:?}"
        );
        assert!(
            runs.iter()
                .all(|r| r.event["kind"] == "cron" && r.status == "succeeded"),
            "{runs:?}"
        );
    });
}
