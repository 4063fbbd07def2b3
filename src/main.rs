//! The `runbookd` binary: a thin CLI over the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use runbookd::{
    app::{Core, Daemon},
    config::Config,
    dispatch::RunRequest,
    engine,
    store::RunStatus,
};
use tokio_util::sync::CancellationToken;

mod cli {
    pub mod logging;
    pub mod params;
    pub mod preflight;
    pub mod remote;
    pub mod replay;
}

#[derive(Parser)]
#[command(name = "runbookd", version, about = "Runbooks that run themselves")]
struct Cli {
    /// Configuration file (TOML). Without it every key takes its default.
    #[arg(long, global = true, env = "RUNBOOKD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The playbook directory, named the same way by every subcommand that loads playbooks.
#[derive(clap::Args, Clone, Default)]
struct PlaybooksDir {
    /// Playbook directory (default: [playbooks] dir).
    #[arg(long = "playbooks", value_name = "DIR")]
    playbooks: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP API, hot-reloaded playbooks, run history.
    Serve {
        /// Serve against a simulated world playing this scenario (examples/scenarios/):
        /// in-memory backends, the real clock, nothing real touched, every answer and log
        /// line marked as simulated.
        #[arg(long, value_name = "SCENARIO")]
        world: Option<PathBuf>,
        #[command(flatten)]
        dir: PlaybooksDir,
    },
    /// Check what `serve` would refuse at start (the configuration, its token files and
    /// secret variables, its channels, the escalation table and the playbooks it names) and
    /// compile every playbook: `path:line:col: message` per playbook error, exit 1 on any;
    /// configuration problems exit 2.
    Check {
        /// The same as --playbooks DIR.
        #[arg(value_name = "DIR", conflicts_with = "playbooks")]
        positional: Option<PathBuf>,
        #[command(flatten)]
        dir: PlaybooksDir,
        /// Also run the playbook tests in DIR/tests (as `runbookd test`).
        #[arg(long)]
        with_tests: bool,
    },
    /// Play an outage scenario against the playbooks on a virtual clock; print its timeline.
    Simulate {
        /// Scenario file (see examples/scenarios/).
        scenario: PathBuf,
        /// Playbook directory (default: [playbooks] dir); `--dir` is the same.
        #[arg(long = "playbooks", alias = "dir", value_name = "DIR")]
        playbooks: Option<PathBuf>,
        /// Print the timeline as JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the playbook tests in DIR/tests against simulated worlds; exit 1 on a failure.
    Test {
        /// The same as --playbooks DIR.
        #[arg(value_name = "DIR", conflicts_with = "playbooks")]
        positional: Option<PathBuf>,
        #[command(flatten)]
        dir: PlaybooksDir,
        /// Only tests whose `file::test_name` contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Tests run at once (default: one per CPU).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run one playbook once, here, and print the run as JSON.
    Run {
        /// Playbook name (file name without `.rhai`).
        playbook: String,
        #[command(flatten)]
        dir: PlaybooksDir,
        /// A parameter `key=value`; the value is read as JSON when it parses, else a string.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Perform reads, record actions as a plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Replay a recorded run (or an incident's runs) against the local playbooks on a
    /// simulated world answering from the recording; print the recorded run and the replay
    /// side by side. Exit 0 the same actions, 1 different actions, 2 a read the recording
    /// does not hold.
    Replay {
        #[command(flatten)]
        args: cli::replay::ReplayArgs,
        #[command(flatten)]
        dir: PlaybooksDir,
    },
    /// Print a shell completion script: `runbookd completions bash > /etc/bash_completion.d/runbookd`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Remote(cli::remote::RemoteCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "runbookd",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runbookd: {e}");
            return ExitCode::from(2);
        }
    };
    // Playbook tests run many simulated runs; their log lines belong in the failure
    // report, not on the terminal (RUST_LOG still wins).
    if matches!(
        cli.command,
        Command::Test { .. }
            | Command::Simulate { .. }
            | Command::Replay { .. }
            | Command::Check {
                with_tests: true,
                ..
            }
    ) {
        config.log.level = "error,runbookd::primitives=off,runbookd::escalation=off".into();
    }
    let simulated = match &cli.command {
        Command::Serve {
            world: Some(path), ..
        } => Some(format!("simulated world {}", path.display())),
        _ => None,
    };
    cli::logging::init_tracing(&config, simulated.as_deref());
    // `--playbooks DIR` (or a positional DIR) replaces [playbooks] dir for this command.
    let dir_origin = match cli.command.playbooks_dir() {
        Some(dir) => {
            config.playbooks.dir = dir;
            DirOrigin::Flag
        }
        None => DirOrigin::Config,
    };
    // Checks and tests need no daemon runtime (tests build their own).
    let command = match cli.command {
        Command::Check { with_tests, .. } => {
            return report(check(config, cli.config.as_deref(), dir_origin, with_tests))
        }
        Command::Test { filter, jobs, .. } => {
            return report(test(config, dir_origin, filter, jobs))
        }
        Command::Simulate { scenario, json, .. } => {
            return report(simulate(config, scenario, dir_origin, json))
        }
        Command::Replay { args, .. } => {
            return report(
                playbook_dir(&config, dir_origin)
                    .and_then(|dir| cli::replay::run(&config, dir, args)),
            )
        }
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runbookd: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve { world, .. } => {
                playbook_dir(&config, dir_origin)?;
                serve(config, world).await
            }
            Command::Run {
                playbook,
                params,
                dry_run,
                ..
            } => {
                playbook_dir(&config, dir_origin)?;
                run_once(config, playbook, params, dry_run).await
            }
            Command::Remote(remote) => Ok(cli::remote::run(&config, remote).await),
            Command::Check { .. }
            | Command::Test { .. }
            | Command::Simulate { .. }
            | Command::Replay { .. }
            | Command::Completions { .. } => {
                unreachable!("handled above")
            }
        }
    });
    report(result)
}

impl Command {
    /// The playbook directory given on the command line, if any.
    fn playbooks_dir(&self) -> Option<PathBuf> {
        match self {
            Command::Serve { dir, .. } | Command::Run { dir, .. } | Command::Replay { dir, .. } => {
                dir.playbooks.clone()
            }
            Command::Check {
                positional, dir, ..
            }
            | Command::Test {
                positional, dir, ..
            } => dir.playbooks.clone().or_else(|| positional.clone()),
            Command::Simulate { playbooks, .. } => playbooks.clone(),
            _ => None,
        }
    }
}

/// Who named the playbook directory: the command line, or the configuration.
#[derive(Clone, Copy)]
enum DirOrigin {
    Flag,
    Config,
}

/// The playbook directory, or an error saying which setting named it and how to name
/// another.
fn playbook_dir(config: &Config, origin: DirOrigin) -> anyhow::Result<PathBuf> {
    let dir = config.playbooks.dir.clone();
    if dir.is_dir() {
        return Ok(dir);
    }
    let named_by = match origin {
        DirOrigin::Flag => "named by --playbooks".to_string(),
        DirOrigin::Config if std::env::var_os("RUNBOOKD_PLAYBOOKS__DIR").is_some() => {
            "named by RUNBOOKD_PLAYBOOKS__DIR ([playbooks] dir)".to_string()
        }
        DirOrigin::Config => format!(
            "[playbooks] dir{}",
            if dir == runbookd::config::PlaybooksConfig::default().dir {
                ", the default"
            } else {
                " in the configuration"
            }
        ),
    };
    anyhow::bail!(
        "playbook directory {} ({named_by}) is not a directory{}: give another with --playbooks DIR or set [playbooks] dir",
        dir.display(),
        if dir.is_relative() {
            format!(
                " under {}",
                std::env::current_dir().unwrap_or_default().display()
            )
        } else {
            String::new()
        }
    )
}

/// The exit code, or 2 with the error for failures that are not the playbooks' own.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runbookd: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config, world: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let missing = cli::preflight::escalation_playbooks_missing(&config);
    let daemon = match world {
        None => Daemon::build(config).await?,
        Some(path) => {
            let scenario =
                runbookd::sim::scenario::Scenario::load(&path).map_err(anyhow::Error::msg)?;
            Daemon::build_world(config, scenario).await?
        }
    };
    // `check` refuses these with a table of one's own; at start, a warning is enough (the
    // playbook may be on its way: the directory is hot-reloaded).
    for (level, playbook) in missing {
        tracing::warn!(level = %level, playbook = %playbook, "escalation level {level} runs playbook `{playbook}`, which is not in the playbook directory: the level's run will fail until it is");
    }
    daemon.run(CancellationToken::new()).await?;
    Ok(ExitCode::SUCCESS)
}

fn test(
    config: Config,
    origin: DirOrigin,
    filter: Option<String>,
    jobs: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let dir = playbook_dir(&config, origin)?;
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let report = runbookd::sim::playtest::run(&config, &dir, filter.as_deref(), jobs)?;
    if report.results.is_empty() && report.broken_files.is_empty() {
        eprintln!(
            "runbookd: no tests in {} (files tests/*.rhai with fn test_…())",
            dir.join("tests").display()
        );
    }
    emit(&report.render())?;
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn simulate(
    config: Config,
    scenario: PathBuf,
    origin: DirOrigin,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use runbookd::sim::{driver::Sim, scenario::Scenario};
    let scenario = Scenario::load(&scenario).map_err(anyhow::Error::msg)?;
    let dir = playbook_dir(&config, origin)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let engine = std::sync::Arc::new(engine::build(&config.playbooks, &dir));
    let catalog = std::sync::Arc::new(engine::Catalog::new(dir.clone(), engine, None));
    let loaded = catalog.reload();
    for e in catalog.errors().values() {
        eprintln!("runbookd: warning: {e}");
    }
    if loaded.loaded.is_empty() {
        anyhow::bail!("no playbook in {} loads", dir.display());
    }
    // 03:00 UTC today: the hour outages happen.
    let start = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(3, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default();
    let sim = Sim::new(&config, catalog, start, runtime.handle().clone())?;
    sim.play(&scenario)?;
    let out = runbookd::sim::timeline::render(&sim, &scenario, start, json)?;
    emit(&out)
}

/// Prints `text` to standard output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn check(
    config: Config,
    file: Option<&std::path::Path>,
    origin: DirOrigin,
    with_tests: bool,
) -> anyhow::Result<ExitCode> {
    let dir = playbook_dir(&config, origin)?;
    let engine = engine::build(&config.playbooks, &dir);
    let (ok, errors) = engine::catalog::check_dir(&engine, &dir)
        .with_context(|| format!("reading playbook directory {}", dir.display()))?;
    for e in &errors {
        println!("{e}");
    }
    eprintln!(
        "checked {} playbooks in {}: {} ok, {} with errors",
        ok.len() + errors.len(),
        dir.display(),
        ok.len(),
        errors.len()
    );
    // Broken playbooks exist too (their errors are above).
    let mut names = ok.clone();
    names.extend(errors.iter().filter_map(|e| {
        std::path::Path::new(&e.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }));
    let (problems, warnings) = cli::preflight::preflight(&config, &names);
    for w in &warnings {
        eprintln!("runbookd: warning: {w}");
    }
    for p in &problems {
        eprintln!("runbookd: {p}");
    }
    let what = file.map_or("the defaults".to_string(), |f| f.display().to_string());
    if !problems.is_empty() {
        eprintln!(
            "{what}: {} problem(s) `runbookd serve` would refuse at start",
            problems.len()
        );
        return Ok(ExitCode::from(2));
    }
    eprintln!("{what}: nothing `runbookd serve` would refuse at start");
    if !errors.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if with_tests {
        return test(config, DirOrigin::Flag, None, None);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_once(
    config: Config,
    playbook: String,
    params: Vec<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let params = cli::params::parse_params(&params)?;
    let core = Core::start(&config).await?;
    if let Some(err) = core.catalog.errors().get(&playbook) {
        eprintln!("runbookd: warning: {err}");
    }
    let submission = core
        .dispatcher
        .submit(
            RunRequest::manual(&playbook, params, dry_run, "cli", &whoami()),
            true,
        )
        .await?;
    let run = match submission.done {
        Some(done) => done.await.context("the run did not finish")?,
        None => anyhow::bail!("the run was not awaited"),
    };
    println!("{}", serde_json::to_string_pretty(&run)?);
    core.dispatcher.shutdown(config.server.shutdown_grace).await;
    core.store.close().await;
    Ok(if run.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn whoami() -> String {
    std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}
