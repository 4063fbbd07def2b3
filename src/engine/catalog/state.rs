//! What the catalog serves and remembers between reloads, and the steps of a reload that
//! change it (refuse what the gate failed, install what compiled, forget what is gone).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use super::{GateRefusal, LoadError, Playbook, ReloadReport};

#[derive(Default)]
pub(super) struct State {
    pub(super) playbooks: BTreeMap<String, Arc<Playbook>>,
    pub(super) errors: BTreeMap<String, LoadError>,
    /// name → hash of what was last compiled (good or bad), to skip unchanged files.
    pub(super) seen: HashMap<String, String>,
    /// Entries of the directory tree skipped at the last scan, by relative path.
    pub(super) tree_errors: BTreeMap<String, LoadError>,
}

/// A playbook compiled at a reload, or why it did not.
pub(super) type Compiled = Result<Playbook, LoadError>;

impl State {
    /// The gate failed: every newly compiled version is refused and the serving one stays;
    /// they are compiled again at the next reload, so a fixed test lets them in.
    pub(super) fn refuse(
        &self,
        compiled: &mut [(String, Compiled)],
        next_seen: &mut HashMap<String, String>,
        why: &GateRefusal,
    ) {
        for (name, result) in compiled.iter_mut() {
            if let Ok(p) = result {
                *result = Err(LoadError {
                    path: p.path.display().to_string(),
                    line: None,
                    column: None,
                    message: format!(
                        "refused: the playbook tests fail with this version ({why}); the last good version keeps serving"
                    ),
                });
                match self.seen.get(name.as_str()) {
                    Some(old) => next_seen.insert(name.clone(), old.clone()),
                    None => next_seen.remove(name.as_str()),
                };
            }
        }
    }

    /// Serves what compiled; what did not is recorded beside the version still serving.
    pub(super) fn install(&mut self, compiled: Vec<(String, Compiled)>, report: &mut ReloadReport) {
        for (name, result) in compiled {
            match result {
                Ok(playbook) => {
                    tracing::info!(playbook = %name, version = %playbook.version, "playbook loaded");
                    self.errors.remove(&name);
                    self.playbooks.insert(name.clone(), Arc::new(playbook));
                    report.loaded.push(name);
                }
                Err(error) => {
                    let serving = self.playbooks.get(&name).map(|p| p.version.clone());
                    tracing::error!(
                        playbook = %name,
                        error = %error,
                        serving = serving.as_deref().unwrap_or("none"),
                        "playbook failed to compile; the last good version keeps serving"
                    );
                    self.errors.insert(name.clone(), error);
                    report.failed.push(name);
                }
            }
        }
    }

    /// Playbooks (and their errors) whose file is gone stop serving.
    pub(super) fn forget_gone(
        &mut self,
        files: &BTreeMap<String, PathBuf>,
        report: &mut ReloadReport,
    ) {
        let gone: Vec<String> = self
            .playbooks
            .keys()
            .chain(self.errors.keys())
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if self.playbooks.remove(&name).is_some() {
                tracing::info!(playbook = %name, "playbook removed");
            }
            self.errors.remove(&name);
            if !report.removed.contains(&name) {
                report.removed.push(name);
            }
        }
    }
}
