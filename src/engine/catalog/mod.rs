//! The playbook catalog: every `NAME.rhai` in the playbook directory, compiled once, with
//! its triggers and a content hash. Reloading recompiles only what changed; a file that
//! fails to compile keeps its last good version serving and exposes its error.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Instant,
};

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope, AST};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{clock::Clock, metrics::Metrics, triggers::TriggerSpec};

mod scan;
mod state;

use state::{Compiled, State};

use scan::{hash_modules, scan};

/// A compiled playbook version. Runs hold an `Arc` to the version they started on, so a
/// reload never changes a run in flight.
#[derive(Debug)]
pub struct Playbook {
    pub name: String,
    pub path: PathBuf,
    /// First 16 hex digits of SHA-256 over the file and every module file it may import.
    pub version: String,
    pub ast: AST,
    pub triggers: Vec<TriggerSpec>,
    /// Unix milliseconds, by the catalog's clock.
    pub loaded_at: i64,
}

/// Why a playbook file could not be loaded, in `path:line:col: message` terms.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LoadError {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.path, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// What one reload changed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub removed: Vec<String>,
    pub failed: Vec<String>,
    pub unchanged: usize,
}

/// The live set of playbooks.
pub struct Catalog {
    dir: PathBuf,
    engine: Arc<Engine>,
    state: RwLock<State>,
    metrics: Option<Arc<Metrics>>,
    /// Serialises reloads (watcher thread vs SIGHUP vs API) without blocking readers.
    reload_lock: std::sync::Mutex<()>,
    /// Bumped whenever the serving set changes, so schedulers re-read triggers.
    changes: tokio::sync::watch::Sender<u64>,
    /// Must pass before changed playbooks replace serving ones (`[playbooks]
    /// require_tests`: the playbook tests); `Err` says why not.
    gate: std::sync::OnceLock<Gate>,
    /// Stamps each version's `loaded_at`.
    clock: Clock,
}

/// A check a reload must pass; see [`Catalog::set_gate`].
pub type Gate = Box<dyn Fn() -> Result<(), GateRefusal> + Send + Sync>;

/// Why the gate keeps a changed playbook out; shown in the playbook's load error.
#[derive(Debug, thiserror::Error)]
pub enum GateRefusal {
    /// The tests could not run at all (no thread, the test tree does not load).
    #[error("the playbook tests cannot run: {0}")]
    CannotRun(String),
    #[error("the playbook tests panicked")]
    Panicked,
    /// The report's summary and the first failure, e.g. `3 passed, 1 failed; first: …`.
    #[error("{summary}; first: {first}")]
    Failed { summary: String, first: String },
}

pub use crate::config::valid_name;

impl Catalog {
    pub fn new(dir: PathBuf, engine: Arc<Engine>, metrics: Option<Arc<Metrics>>) -> Catalog {
        Catalog {
            dir,
            engine,
            state: RwLock::new(State::default()),
            metrics,
            reload_lock: std::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            gate: std::sync::OnceLock::new(),
            clock: Clock::Real,
        }
    }

    /// The same catalog, stamping load times from `clock` (a world's virtual one).
    pub fn with_clock(mut self, clock: Clock) -> Catalog {
        self.clock = clock;
        self
    }

    /// Installs a check that changed playbooks must pass before they serve. When it fails
    /// the last good versions keep serving, the refused files show the reason as their load
    /// error, and they are tried again at the next reload (fixing a test is enough). At
    /// start, with nothing serving yet, a failing check is logged and the playbooks load.
    pub fn set_gate(&self, gate: Gate) {
        let _ = self.gate.set(gate);
    }

    /// Notified after every reload that changed what is serving.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The directory this catalog loads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine playbooks run on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The serving version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Playbook>> {
        self.read().playbooks.get(name).cloned()
    }

    /// Every serving playbook, by name.
    pub fn playbooks(&self) -> Vec<Arc<Playbook>> {
        self.read().playbooks.values().cloned().collect()
    }

    /// Files whose latest edit did not compile, by playbook name; entries of the directory
    /// tree that were skipped (loops, FIFOs, links out), by their path in it.
    pub fn errors(&self) -> BTreeMap<String, LoadError> {
        let state = self.read();
        let mut all = state.errors.clone();
        all.extend(state.tree_errors.clone());
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Rescans the directory: compiles new and changed files, drops deleted ones.
    pub fn reload(&self) -> ReloadReport {
        let _serial = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let mut report = ReloadReport::default();
        let files = match scan(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read playbook directory; keeping what is loaded");
                return report;
            }
        };
        let (modules_hash, tree_problems) = hash_modules(&self.dir);
        let (mut next_seen, mut compiled) =
            self.compile_changed(&files, &modules_hash, &mut report);
        let gate_verdict = match self.gate.get() {
            Some(gate) if compiled.iter().any(|(_, r)| r.is_ok()) => gate().err(),
            _ => None,
        };
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &gate_verdict {
            if state.seen.is_empty() {
                tracing::error!(reason = %why, "playbook tests fail; loading the playbooks anyway (nothing was serving)");
            } else {
                state.refuse(&mut compiled, &mut next_seen, why);
            }
        }
        state.install(compiled, &mut report);
        state.forget_gone(&files, &mut report);
        state.seen = next_seen;
        state.tree_errors = tree_problems
            .into_iter()
            .map(|(path, message)| {
                tracing::error!(path = %path.display(), %message, "playbook directory entry skipped");
                let rel = path.strip_prefix(&self.dir).unwrap_or(&path).display().to_string();
                (
                    rel,
                    LoadError {
                        path: path.display().to_string(),
                        line: None,
                        column: None,
                        message,
                    },
                )
            })
            .collect();
        if !report.loaded.is_empty() || !report.removed.is_empty() {
            self.changes.send_modify(|n| *n += 1);
        }
        if let Some(m) = &self.metrics {
            m.observe_catalog(
                state.playbooks.len(),
                &state.errors.keys().cloned().collect::<Vec<_>>(),
                started.elapsed(),
            );
        }
        report
    }

    /// Compiles the files whose version (source and modules) changed since they were last
    /// seen; answers every file's version to remember and what was compiled.
    fn compile_changed(
        &self,
        files: &BTreeMap<String, PathBuf>,
        modules_hash: &str,
        report: &mut ReloadReport,
    ) -> (HashMap<String, String>, Vec<(String, Compiled)>) {
        let mut next_seen = HashMap::new();
        let mut compiled = Vec::new();
        let state = self.read();
        for (name, path) in files {
            let source = match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    // Mid-rename or unreadable: keep what we have, try again next event.
                    tracing::warn!(file = %path.display(), error = %e, "cannot read playbook");
                    if let Some(h) = state.seen.get(name) {
                        next_seen.insert(name.clone(), h.clone());
                    }
                    continue;
                }
            };
            let version = version_of(&source, modules_hash);
            next_seen.insert(name.clone(), version.clone());
            if state.seen.get(name) == Some(&version) {
                report.unchanged += 1;
                continue;
            }
            let loaded_at = self.clock.now_ms();
            compiled.push((
                name.clone(),
                compile(&self.engine, name, path, &source, version, loaded_at),
            ));
        }
        (next_seen, compiled)
    }
}

/// The subdirectory of the playbook directory that holds playbook tests (`runbookd test`).
pub const TESTS_DIR: &str = "tests";

fn version_of(source: &str, modules_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update(modules_hash.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

fn position(pos: Position) -> (Option<usize>, Option<usize>) {
    (pos.line(), pos.position())
}

/// Longest that `triggers()` and imported modules' top levels may run while loading.
const LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Compiles one playbook: syntax, imports, `fn run(event)`, and `triggers()`; `loaded_at`
/// (unix ms) is when it is being loaded.
pub fn compile(
    engine: &Engine,
    name: &str,
    path: &Path,
    source: &str,
    version: String,
    loaded_at: i64,
) -> Result<Playbook, LoadError> {
    let fail = |pos: Position, message: String| {
        let (line, column) = position(pos);
        LoadError {
            path: path.display().to_string(),
            line,
            column,
            message,
        }
    };
    if !valid_name(name) {
        return Err(fail(
            Position::NONE,
            format!("`{name}` is not a valid playbook name (use a-z, 0-9, _ and -)"),
        ));
    }
    // Module top levels and triggers() run now: bound them like a run.
    let _deadline = crate::primitives::LoadGuard::install(LOAD_LIMIT);
    let ast = super::modules::while_compiling(|| {
        engine.compile_into_self_contained(&Scope::new(), source)
    })
    .map_err(|e| {
        let pos = innermost(&e).position();
        fail(pos, strip_position(&innermost(&e).to_string(), pos))
    })?;
    let has_run = ast
        .iter_functions()
        .any(|f| f.name == "run" && f.params.len() == 1);
    if !has_run {
        return Err(fail(
            Position::NONE,
            "no entry point: define `fn run(event) { ... }`".into(),
        ));
    }
    let has_triggers = ast
        .iter_functions()
        .any(|f| f.name == "triggers" && f.params.is_empty());
    let triggers = if has_triggers {
        let value: Dynamic = engine
            .call_fn_with_options(
                CallFnOptions::new().eval_ast(false),
                &mut Scope::new(),
                &ast,
                "triggers",
                (),
            )
            .map_err(|e| {
                let inner = innermost(&e);
                let pos = inner.position();
                let message = match inner {
                    EvalAltResult::ErrorTerminated(token, _)
                        if token.to_string() == crate::primitives::TERMINATED_MEMORY =>
                    {
                        "held more memory than [playbooks] max_run_memory; it must only \
                         return the trigger list"
                            .to_string()
                    }
                    EvalAltResult::ErrorTerminated(..) => format!(
                        "ran longer than {} s; it must only return the trigger list",
                        LOAD_LIMIT.as_secs()
                    ),
                    // Which limit a loop meets first depends on how fast the machine is.
                    EvalAltResult::ErrorTooManyOperations(..) => format!(
                        "used more than [playbooks] max_operations ({}) operations; it must only \
                         return the trigger list",
                        engine.max_operations()
                    ),
                    _ => strip_position(&inner.to_string(), pos),
                };
                fail(pos, format!("triggers(): {message}"))
            })?;
        let json: serde_json::Value = rhai::serde::from_dynamic(&value)
            .map_err(|e| fail(Position::NONE, format!("triggers(): {e}")))?;
        TriggerSpec::parse_all(&json).map_err(|e| fail(Position::NONE, e.to_string()))?
    } else {
        Vec::new()
    };
    Ok(Playbook {
        name: name.to_string(),
        path: path.to_path_buf(),
        version,
        ast,
        triggers,
        loaded_at,
    })
}

/// The error that actually happened, not the chain of calls that led to it.
pub fn innermost(mut err: &EvalAltResult) -> &EvalAltResult {
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => err = inner,
            _ => return err,
        }
    }
}

/// Rhai appends " (line L, position C)" to messages; we report the position separately.
pub fn strip_position(message: &str, pos: Position) -> String {
    if pos.is_none() {
        return message.to_string();
    }
    let suffix = format!(" ({pos})");
    message.strip_suffix(&suffix).unwrap_or(message).to_string()
}

/// Compiles every playbook in `dir` once, for `runbookd check`. Returns the good names and
/// the errors.
pub fn check_dir(engine: &Engine, dir: &Path) -> std::io::Result<(Vec<String>, Vec<LoadError>)> {
    let (modules_hash, problems) = hash_modules(dir);
    let mut ok = Vec::new();
    let mut errors: Vec<LoadError> = problems
        .into_iter()
        .map(|(path, message)| LoadError {
            path: path.display().to_string(),
            line: None,
            column: None,
            message,
        })
        .collect();
    for (name, path) in scan(dir)? {
        let source = std::fs::read_to_string(&path)?;
        let version = version_of(&source, &modules_hash);
        match compile(engine, &name, &path, &source, version, Clock::Real.now_ms()) {
            Ok(_) => ok.push(name),
            Err(e) => errors.push(e),
        }
    }
    Ok((ok, errors))
}
