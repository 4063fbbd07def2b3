//! The `runbookd` binary: a thin CLI over the library.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use runbookd::{
    app::{Core, Daemon},
    config::{Config, LogFormat},
    dispatch::RunRequest,
    engine,
    store::{RunStatus, Trigger},
    triggers::Event,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "runbookd", version, about = "Runbooks that run themselves")]
struct Cli {
    /// Configuration file (TOML). Without it every key takes its default.
    #[arg(long, global = true, env = "RUNBOOKD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP API, hot-reloaded playbooks, run history.
    Serve,
    /// Compile every playbook; print `path:line:col: message` per error; exit 1 on any.
    Check {
        /// Playbook directory (default: [playbooks] dir).
        dir: Option<PathBuf>,
    },
    /// Run one playbook once, here, and print the run as JSON.
    Run {
        /// Playbook name (file name without `.rhai`).
        playbook: String,
        /// A parameter `key=value`; the value is read as JSON when it parses, else a string.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Perform reads, record actions as a plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runbookd: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
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
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Check { dir } => check(config, dir),
            Command::Run {
                playbook,
                params,
                dry_run,
            } => run_once(config, playbook, params, dry_run).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runbookd: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let daemon = Daemon::build(config).await?;
    daemon.run(CancellationToken::new()).await?;
    Ok(ExitCode::SUCCESS)
}

fn check(config: Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or(config.playbooks.dir.clone());
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
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn parse_params(raw: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut params = Map::new();
    for p in raw {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param `{p}` must look like key=value"))?;
        if k.is_empty() {
            anyhow::bail!("--param `{p}` has an empty key");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        params.insert(k.to_string(), value);
    }
    Ok(params)
}

async fn run_once(
    config: Config,
    playbook: String,
    params: Vec<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let params = parse_params(&params)?;
    let core = Core::start(&config).await?;
    if let Some(err) = core.catalog.errors().get(&playbook) {
        eprintln!("runbookd: warning: {err}");
    }
    let submission = core
        .dispatcher
        .submit(
            RunRequest {
                event: Event::manual(&playbook, params, dry_run),
                playbook,
                trigger: Trigger {
                    kind: "manual".into(),
                    name: "cli".into(),
                    actor: whoami(),
                },
            },
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
