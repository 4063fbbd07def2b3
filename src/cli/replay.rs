//! `runbookd replay`: fetch a recorded run (or an incident's runs) from the daemon, or read
//! an exported recording, and replay it against the local playbooks
//! (`runbookd::sim::replay`). Nothing real is touched: the replay's world is simulated and
//! its reads answer from the recording.
//!
//! Exit codes: 0 the same actions, 1 different actions, 2 a read the recording does not
//! hold (and usage errors: clap's, a bad `--save-test` name), 3 the replay cannot be made
//! (the daemon unreachable or refusing, the recording unreadable, the simulated world not
//! set up, the test not written), 4 not found (run, incident, file, playbook).

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use runbookd::{
    config::Config,
    engine,
    primitives::recorder::RecordedRun,
    sim::replay::{self, save},
};

use super::remote::{Client, Failure, Target};

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The run to replay (its id), read from the daemon's `GET /api/v1/runs/RUN/recording`.
    #[arg(value_name = "RUN", conflicts_with_all = ["file", "incident"], required_unless_present_any = ["file", "incident"])]
    run: Option<String>,
    /// Replay an exported recording instead (the JSON of `GET /api/v1/runs/RUN/recording`,
    /// or a saved test's `tests/recorded/NAME.json`), offline.
    #[arg(long, value_name = "FILE", conflicts_with = "incident")]
    file: Option<PathBuf>,
    /// Replay every run of this incident, oldest first, on one virtual clock.
    #[arg(long, value_name = "ID")]
    incident: Option<String>,
    /// Answer reads the recording does not hold from this simulated world instead of
    /// stopping (only `default`: the default simulated world).
    #[arg(long, value_name = "WORLD", value_parser = ["default"])]
    fill: Option<String>,
    /// Keep the recording as a playbook test: DIR/tests/recorded/NAME.json and
    /// DIR/tests/NAME.rhai asserting the recorded actions.
    #[arg(long, value_name = "NAME")]
    save_test: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Replays as `args` say, against the playbooks of `dir`.
pub fn run(config: &Config, dir: PathBuf, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let fail = |code: u8, message: String| {
        eprintln!("runbookd: {message}");
        Ok(ExitCode::from(code))
    };
    if let Some(name) = &args.save_test {
        if let Err(e) = save::test_paths(&dir, name) {
            return fail(Failure::USAGE, e.to_string());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (runs, incident_timeline) = match runtime.block_on(recorded_runs(config, &args)) {
        Ok(found) => found,
        // The daemon's 409 (not ended) and 5xx mean no recording to replay, not a verdict.
        Err(f) if f.code == Failure::FAILED => return fail(Failure::UNREACHABLE, f.message),
        Err(f) => return fail(f.code, f.message),
    };
    let engine = Arc::new(engine::build(&config.playbooks, &dir));
    let catalog = Arc::new(engine::Catalog::new(dir.clone(), engine, None));
    catalog.reload();
    let options = replay::Options {
        fill: args.fill.is_some(),
        incident_timeline,
    };
    let report = match replay::replay(
        config,
        catalog,
        runtime.handle().clone(),
        runs.clone(),
        &options,
    ) {
        Ok(report) => report,
        Err(e @ replay::ReplayError::NoPlaybook { .. }) => {
            return fail(Failure::NOT_FOUND, e.to_string())
        }
        Err(e) => return fail(Failure::UNREACHABLE, e.to_string()),
    };
    if args.target.json {
        // Redacted as a whole: the replay's own run records too.
        let json = runbookd::primitives::recorder::redacted(serde_json::to_value(&report)?);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", replay::render::text(&report));
    }
    if let Some(name) = &args.save_test {
        let [recording, test] = match save::save_test(&dir, name, &runs) {
            Ok(paths) => paths,
            Err(e) => return fail(Failure::UNREACHABLE, e.to_string()),
        };
        eprintln!(
            "runbookd: saved {} and {}; `runbookd test {}` replays it",
            recording.display(),
            test.display(),
            dir.display()
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The runs to replay — the one named, the incident's, or the file's — and, for an
/// incident, its timeline.
async fn recorded_runs(
    config: &Config,
    args: &ReplayArgs,
) -> Result<(Vec<RecordedRun>, Option<Vec<serde_json::Value>>), Failure> {
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::new(
                Failure::NOT_FOUND,
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let runs = save::runs_from_json(&text)
            .map_err(|e| Failure::new(Failure::UNREACHABLE, format!("{}: {e}", file.display())))?;
        return Ok((runs, None));
    }
    let client = Client::new(config, &args.target)?;
    let (ids, timeline) = match (&args.run, &args.incident) {
        (Some(run), _) => (
            vec![super::remote::uuid_arg(run, "run", "runbookd runs")?],
            None,
        ),
        (None, Some(incident)) => {
            let (ids, timeline) = incident_runs(&client, incident).await?;
            (ids, Some(timeline))
        }
        (None, None) => {
            return Err(Failure::new(
                Failure::USAGE,
                "name a RUN, --file or --incident",
            ))
        }
    };
    let mut runs = Vec::new();
    for id in ids {
        let body = match client.get(&format!("/api/v1/runs/{id}/recording")).await {
            Ok(body) => body,
            // An incident's run that ended without a recording (before recordings, or
            // with them turned off) is left out, and said so.
            Err(f) if timeline.is_some() && f.code == Failure::NOT_FOUND => {
                eprintln!("runbookd: run {id} is left out: {}", f.message);
                continue;
            }
            Err(f) => return Err(f),
        };
        let run: RecordedRun = serde_json::from_value(body).map_err(|e| {
            Failure::new(
                Failure::UNREACHABLE,
                format!("the daemon's recording of run {id} does not read: {e}"),
            )
        })?;
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(Failure::new(
            Failure::NOT_FOUND,
            "none of the incident's runs has a recording",
        ));
    }
    Ok((runs, timeline))
}

/// The incident's runs that ended, oldest first, and its timeline.
async fn incident_runs(
    client: &Client,
    incident: &str,
) -> Result<(Vec<String>, Vec<serde_json::Value>), Failure> {
    let incident = super::remote::uuid_arg(incident, "incident", "runbookd incidents --all")?;
    // The incident itself first: an unknown one is a 404 (exit 4), not an empty replay.
    let shown = client.get(&format!("/api/v1/incidents/{incident}")).await?;
    let timeline = shown["timeline"].as_array().cloned().unwrap_or_default();
    let listed = client
        .get(&format!("/api/v1/runs?incident={incident}&limit=1000"))
        .await?;
    let mut runs: Vec<String> = listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running") | None))
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if runs.is_empty() {
        return Err(Failure::new(
            Failure::NOT_FOUND,
            format!("incident {incident} has no run that ended"),
        ));
    }
    // Ids are UUIDv7: their order is their queueing order.
    runs.sort();
    Ok((runs, timeline))
}
