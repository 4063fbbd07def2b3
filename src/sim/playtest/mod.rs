//! `runbookd test`: playbook tests, next to the playbooks, run offline against simulated
//! worlds on a virtual clock.
//!
//! A test file is `PLAYBOOK_DIR/tests/NAME.rhai`; every `fn test_…()` in it is a test. A
//! test builds a world, drives it and asserts on what the real playbooks did:
//!
//! ```text
//! fn test_stripe_down_never_resets_the_breaker() {
//!     let w = world();
//!     w.stripe_status("major", "Elevated error rates");
//!     w.open_breaker(100);
//!     let runs = w.alert("PaymentProcessorDown");
//!     assert_eq(w.breaker(), "half_open", "breaker left alone");
//!     w.advance("31m");
//!     assert_eq(w.incident().level, "L2");
//! }
//! ```
//!
//! Tests run in parallel, each in its own world. A failure prints where it failed, what
//! differed, and the log of every run in that test's world. `api.rs` has the world builder
//! and the assertions.

mod api;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rhai::{CallFnOptions, Engine, Scope, AST};

use crate::{config::Config, engine::Catalog};

/// One test's outcome.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `file::test_name`.
    pub name: String,
    pub passed: bool,
    pub took: Duration,
    /// Where and why it failed.
    pub failure: Option<String>,
    /// The log of every run in the failed test's worlds.
    pub logs: Vec<String>,
}

/// Every test's outcome, in file and definition order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<TestResult>,
    /// Test files that did not compile (`path:line:col: message`).
    pub broken_files: Vec<String>,
    pub took: Duration,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed() + self.broken_files.len()
    }

    /// The summary line, the last line `runbookd test` prints.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// What `runbookd test` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for b in &self.broken_files {
            out.push_str(&format!("FAIL  {b}\n"));
        }
        for r in &self.results {
            let ms = r.took.as_secs_f64() * 1000.0;
            if r.passed {
                out.push_str(&format!("ok    {} ({ms:.0} ms)\n", r.name));
                continue;
            }
            out.push_str(&format!("FAIL  {} ({ms:.0} ms)\n", r.name));
            if let Some(f) = &r.failure {
                for line in f.lines() {
                    out.push_str(&format!("      {line}\n"));
                }
            }
            for line in &r.logs {
                out.push_str(&format!("      | {line}\n"));
            }
        }
        out.push_str(&format!(
            "{} tests in {:.2} s\n{}\n",
            self.results.len() + self.broken_files.len(),
            self.took.as_secs_f64(),
            self.summary()
        ));
        out
    }
}

/// Errors before any test ran.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Runtime(String),
}

/// Test files in `dir/tests`, sorted.
fn test_files(dir: &Path) -> Result<Vec<PathBuf>, TestError> {
    let tests = dir.join(crate::engine::catalog::TESTS_DIR);
    let entries = match std::fs::read_dir(&tests) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TestError::Io {
                path: tests.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("rhai"))
        .collect();
    files.sort();
    Ok(files)
}

/// One test to run.
struct Case {
    file: String,
    ast: Arc<AST>,
    function: String,
}

/// The name of every thread a playbook test runs on: the daemon's log marks their lines as
/// simulated (`[SIMULATED]`, a `"simulated"` field), so a test world's breaker reset never
/// reads like a real one.
pub const THREAD_NAME: &str = "runbookd-playtest";

/// Runs every test under `dir/tests` against the playbooks in `dir`, on `threads` threads.
/// `filter` keeps tests whose `file::name` contains it.
pub fn run(
    config: &Config,
    dir: &Path,
    filter: Option<&str>,
    threads: usize,
) -> Result<Report, TestError> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
        .map_err(|e| TestError::Runtime(e.to_string()))?;
    let engine = Arc::new(crate::engine::build(&config.playbooks, dir));
    let catalog = Arc::new(Catalog::new(dir.to_path_buf(), engine, None));
    catalog.reload();
    let test_engine = Arc::new(api::engine(dir));
    let mut report = Report::default();
    let mut cases = Vec::new();
    for file in test_files(dir)? {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("tests")
            .to_string();
        let source = std::fs::read_to_string(&file).map_err(|e| TestError::Io {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        let ast = match crate::engine::modules::while_compiling(|| {
            test_engine.compile_into_self_contained(&rhai::Scope::new(), &source)
        }) {
            Ok(ast) => Arc::new(ast),
            Err(e) => {
                // A syntax error, or an import refused while resolving (the innermost
                // error says which and where).
                let inner = crate::engine::catalog::innermost(&e);
                let p = inner.position();
                report.broken_files.push(format!(
                    "{}:{}:{}: {}",
                    file.display(),
                    p.line().unwrap_or(0),
                    p.position().unwrap_or(0),
                    crate::engine::catalog::strip_position(&inner.to_string(), p)
                ));
                continue;
            }
        };
        for f in ast.iter_functions() {
            if f.name.starts_with("test_") && f.params.is_empty() {
                let full = format!("{name}::{}", f.name);
                if filter.is_none_or(|want| full.contains(want)) {
                    cases.push(Case {
                        file: file.display().to_string(),
                        ast: ast.clone(),
                        function: f.name.to_string(),
                    });
                }
            }
        }
    }
    let names: Vec<String> = cases
        .iter()
        .map(|c| {
            let stem = Path::new(&c.file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("tests")
                .to_string();
            format!("{stem}::{}", c.function)
        })
        .collect();
    let results: Mutex<Vec<Option<TestResult>>> = Mutex::new(vec![None; cases.len()]);
    let next = AtomicUsize::new(0);
    let handle = runtime.handle().clone();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(cases.len().max(1)) {
            let worker = std::thread::Builder::new().name(THREAD_NAME.into());
            let spawned = worker.spawn_scoped(scope, || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else {
                    return;
                };
                let result = run_case(
                    &test_engine,
                    case,
                    &names[i],
                    config,
                    &catalog,
                    handle.clone(),
                );
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a playbook test thread");
            }
        }
    });
    report.results = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    report.took = started.elapsed();
    Ok(report)
}

fn run_case(
    engine: &Engine,
    case: &Case,
    name: &str,
    config: &Config,
    catalog: &Arc<Catalog>,
    runtime: tokio::runtime::Handle,
) -> TestResult {
    let started = Instant::now();
    let _guard = api::TestGuard::install(api::TestContext {
        config: config.clone(),
        catalog: catalog.clone(),
        runtime,
        worlds: Default::default(),
    });
    // The file's top level runs first (its `import`s, resolved when it compiled, make their
    // modules visible to the test functions), as a playbook's does before `run`.
    let outcome = engine.call_fn_with_options::<rhai::Dynamic>(
        CallFnOptions::new().eval_ast(true).rewind_scope(true),
        &mut Scope::new(),
        &case.ast,
        &case.function,
        (),
    );
    let took = started.elapsed();
    match outcome {
        Ok(_) => TestResult {
            name: name.into(),
            passed: true,
            took,
            failure: None,
            logs: Vec::new(),
        },
        Err(e) => {
            let inner = crate::engine::catalog::innermost(&e);
            let pos = inner.position();
            let message = match inner {
                rhai::EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
                other => crate::engine::catalog::strip_position(&other.to_string(), pos),
            };
            TestResult {
                name: name.into(),
                passed: false,
                took,
                failure: Some(format!(
                    "{}:{}:{}: {message}",
                    case.file,
                    pos.line().unwrap_or(0),
                    pos.position().unwrap_or(0)
                )),
                logs: api::logs_of_current_worlds(),
            }
        }
    }
}
