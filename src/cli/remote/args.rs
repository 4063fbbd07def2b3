//! The remote verbs' arguments, flattened into the binary's `Command`, and which function
//! serves each.

use std::process::ExitCode;

use clap::Subcommand;
use runbookd::config::Config;

use super::{approvals, incidents, runs, status, Client, Outcome, Target};

/// Verbs that ask a running daemon (token: `RUNBOOKD_TOKEN`).
#[derive(Subcommand)]
pub enum RemoteCommand {
    /// List runs of a running daemon, newest first.
    Runs {
        /// Only runs of this playbook.
        #[arg(long)]
        playbook: Option<String>,
        /// Only runs with this status: queued, running, succeeded, failed, timed_out,
        /// skipped, awaiting_approval.
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs (1–1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Show one run: its record, attempts, actions and log.
    Show {
        /// The run's id (the first column of `runbookd runs`).
        run: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print a run's log; with --follow, wait until the run ends and exit with its outcome.
    Logs {
        /// The run's id.
        run: String,
        /// Keep watching the daemon's event stream until the run ends; exit 0 only when it
        /// succeeded.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Start a playbook on a running daemon; prints the run's id (or, with --wait, the run).
    Trigger {
        /// The playbook's name.
        playbook: String,
        /// A parameter `key=value`; the value is read as JSON when it parses, else a string.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Perform reads, record actions as a plan, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait for the run to end; exit 0 only when it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List incidents: open and acknowledged ones (all of them with --all).
    Incidents {
        /// Resolved incidents too.
        #[arg(long)]
        all: bool,
        /// At most this many incidents (of each status without --all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Show one incident and its timeline.
    Incident {
        /// The incident's id (the first column of `runbookd incidents`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Acknowledge an incident: its escalation stops repeating, paged channels are told.
    Ack {
        /// The incident's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Resolve an incident.
    Resolve {
        /// The incident's id.
        id: String,
        /// Why, or what was done: shown on the incident's timeline.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The circuit breakers the daemon knows, and their state.
    Breakers {
        #[command(flatten)]
        target: Target,
    },
    /// The daemon's readiness, its replicas, and the approvals waiting for a human; exit 1
    /// when it is not ready.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// List the approvals playbooks asked for.
    Approvals {
        /// Only this status: pending, approved, denied, expired, used.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Approve approval ID; its follow-up run starts.
    Approve(Decision),
    /// Deny approval ID; its follow-up run is told.
    Deny(Decision),
}

/// `runbookd approve` / `runbookd deny`.
#[derive(clap::Args)]
pub struct Decision {
    /// The approval's id (the first column of `runbookd approvals`).
    pub id: String,
    /// Why: recorded with the decision, shown in the audit trail and on the incident.
    #[arg(long)]
    pub comment: Option<String>,
    /// Who decides, for a daemon without tokens (with tokens: the token's name).
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

impl RemoteCommand {
    fn target(&self) -> &Target {
        match self {
            RemoteCommand::Runs { target, .. }
            | RemoteCommand::Show { target, .. }
            | RemoteCommand::Logs { target, .. }
            | RemoteCommand::Trigger { target, .. }
            | RemoteCommand::Incidents { target, .. }
            | RemoteCommand::Incident { target, .. }
            | RemoteCommand::Ack { target, .. }
            | RemoteCommand::Resolve { target, .. }
            | RemoteCommand::Breakers { target }
            | RemoteCommand::Status { target }
            | RemoteCommand::Approvals { target, .. } => target,
            RemoteCommand::Approve(d) | RemoteCommand::Deny(d) => &d.target,
        }
    }
}

/// Serves `command` against the daemon it names.
pub async fn dispatch(config: &Config, command: RemoteCommand) -> Outcome {
    let client = Client::new(config, command.target())?;
    let c = &client;
    match command {
        RemoteCommand::Runs {
            playbook,
            status,
            limit,
            ..
        } => runs::list(c, playbook, status, limit).await,
        RemoteCommand::Show { run, .. } => runs::show(c, &run).await,
        RemoteCommand::Logs { run, follow, .. } => runs::logs(c, &run, follow).await,
        RemoteCommand::Trigger {
            playbook,
            params,
            dry_run,
            wait,
            ..
        } => runs::trigger(c, &playbook, &params, dry_run, wait).await,
        RemoteCommand::Incidents { all, limit, .. } => incidents::list(c, all, limit).await,
        RemoteCommand::Incident { id, .. } => incidents::show(c, &id).await,
        RemoteCommand::Ack { id, .. } => incidents::ack(c, &id).await,
        RemoteCommand::Resolve { id, comment, .. } => {
            incidents::resolve(c, &id, comment.as_deref()).await
        }
        RemoteCommand::Breakers { .. } => status::breakers(c).await,
        RemoteCommand::Status { .. } => status::status(c).await,
        RemoteCommand::Approvals { status, .. } => approvals::list(c, status).await,
        RemoteCommand::Approve(d) => approvals::decide(c, &d.id, true, d.comment, d.by).await,
        RemoteCommand::Deny(d) => approvals::decide(c, &d.id, false, d.comment, d.by).await,
    }
}

/// Exit 0.
pub fn done() -> Outcome {
    Ok(ExitCode::SUCCESS)
}
