//! `runbookd check` as a preflight: what `serve` would refuse at start, found without
//! starting it.

use runbookd::config::Config;

/// What `serve` would refuse at start, checked with the daemon's own constructors and
/// without touching any backend: token files and variables, the loopback rule, every
/// channel's secrets, Slack's signing secret, the escalation table with its channels and
/// the playbooks its levels run. Returns (problems, warnings), each naming its key once.
pub fn preflight(config: &Config, playbooks: &[String]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    match runbookd::http::Auth::from_config(&config.server.tokens) {
        // The rule `serve` applies (src/app/daemon.rs).
        Ok(auth) if auth.is_open() && !config.server.listen.ip().is_loopback() => {
            problems.push(format!(
                "config key `server.listen`: {} is not a loopback address and no [[server.tokens]] are configured: add tokens or listen on 127.0.0.1",
                config.server.listen
            ))
        }
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    for (name, channel) in &config.channels {
        if let Err(e) = runbookd::notify::Channel::from_config(name, channel) {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = runbookd::http::slack::SlackApprovals::from_config(&config.approvals) {
        problems.push(e.to_string());
    }
    // A status page without its key does not stop `serve` (it says so on first use), but
    // users would not be told: say it now.
    let sp = &config.statuspage;
    if sp.page_id.is_some() {
        let env = if sp.api_key_file.is_some() {
            None
        } else {
            sp.api_key_env.as_deref()
        };
        if let Err(e) =
            runbookd::config::resolve_secret("statuspage.api_key", env, sp.api_key_file.as_deref())
        {
            warnings.push(format!(
                "{e} (serve starts; the status page cannot be updated)"
            ));
        }
    }
    let file = &config.escalation.file;
    let own_table = file.exists();
    if !own_table && *file != runbookd::config::EscalationConfig::default().file {
        warnings.push(format!(
            "[escalation] file {} does not exist: the shipped table (examples/escalation.toml) is used",
            file.display()
        ));
    }
    let channels: Vec<String> = config.channels.keys().cloned().collect();
    match runbookd::escalation::Escalation::load(file.clone(), channels) {
        Err(e) => problems.push(format!("config key `escalation.file`: {e}")),
        Ok(table) => {
            for level in &table.table().levels {
                for p in level.playbooks.iter().filter(|p| !playbooks.contains(p)) {
                    let text = format!(
                        "escalation level {} runs playbook `{p}`, which is not in the playbook directory",
                        level.name
                    );
                    // The shipped table names the shipped playbooks; another directory
                    // may do without them.
                    if own_table {
                        problems.push(text);
                    } else {
                        warnings.push(format!("{text} (the shipped table)"));
                    }
                }
            }
        }
    }
    (problems, warnings)
}

/// The (level, playbook) pairs of the escalation table whose playbook is not a file of the
/// playbook directory (by name, without compiling anything).
pub fn escalation_playbooks_missing(config: &Config) -> Vec<(String, String)> {
    let names: Vec<String> = std::fs::read_dir(&config.playbooks.dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let channels: Vec<String> = config.channels.keys().cloned().collect();
    let Ok(table) =
        runbookd::escalation::Escalation::load(config.escalation.file.clone(), channels)
    else {
        // A table that does not load is the daemon's to refuse.
        return Vec::new();
    };
    let table = table.table();
    table
        .levels
        .iter()
        .flat_map(|l| {
            l.playbooks
                .iter()
                .filter(|p| !names.contains(p))
                .map(|p| (l.name.clone(), p.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}
