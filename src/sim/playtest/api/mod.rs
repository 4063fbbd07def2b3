//! What a playbook test can call: `world()` and the world's builder, driver and read
//! methods, and the assertions. Documented for users in docs/testing.md.

mod alerts;
mod approvals;
mod replay;
mod world;

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, FLOAT, INT};
use serde_json::Value;

use crate::{
    config::Config,
    engine::Catalog,
    sim::{
        change::Change,
        driver::{Sim, SimRun},
    },
};

/// When every test world starts: 03:00 UTC, the hour runbooks are written for.
const START: &str = "2026-11-27T03:00:00Z";

/// What the running test shares with the functions it calls.
pub struct TestContext {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub runtime: tokio::runtime::Handle,
    /// Worlds this test built, for the failure report.
    pub worlds: RefCell<Vec<Arc<Sim>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<TestContext>>> = const { RefCell::new(None) };
}

/// Keeps a test's context installed on this thread until dropped.
/// The test in force on this thread; its script's memory counts from here
/// (`[playbooks] max_run_memory`, as for a run).
pub struct TestGuard {
    _memory: crate::primitives::memory::Budget,
}

impl TestGuard {
    pub fn install(ctx: TestContext) -> TestGuard {
        CURRENT.with(|c| *c.borrow_mut() = Some(Rc::new(ctx)));
        TestGuard {
            _memory: crate::primitives::memory::Budget::enter(),
        }
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

fn context() -> Result<Rc<TestContext>, Box<EvalAltResult>> {
    CURRENT
        .with(|c| c.borrow().clone())
        .ok_or_else(|| fail("world() is only available inside a test"))
}

fn fail(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        Position::NONE,
    ))
}

/// The log of every run in the current test's worlds, for a failure report.
pub fn logs_of_current_worlds() -> Vec<String> {
    let Ok(ctx) = context() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sim in ctx.worlds.borrow().iter() {
        for run in sim.runs() {
            out.push(format!(
                "{} ({} {}{}) {}{}",
                run.playbook,
                run.event["kind"].as_str().unwrap_or(""),
                run.event["name"].as_str().unwrap_or(""),
                match run.event["status"].as_str() {
                    Some(s) if !s.is_empty() => format!(" {s}"),
                    _ => String::new(),
                },
                run.status,
                run.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            out.extend(run.logs.iter().map(|l| format!("  {l}")));
        }
    }
    out
}

/// A simulated world, as tests hold it.
#[derive(Clone)]
pub struct World(Arc<Sim>);

fn new_world() -> Result<World, Box<EvalAltResult>> {
    let ctx = context()?;
    let start = chrono::DateTime::parse_from_rfc3339(START)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default();
    let sim = Sim::new(&ctx.config, ctx.catalog.clone(), start, ctx.runtime.clone())
        .map_err(|e| fail(e.to_string()))?;
    let sim = Arc::new(sim);
    ctx.worlds.borrow_mut().push(sim.clone());
    Ok(World(sim))
}

/// Seconds (`90`, `1.5`) or text (`"31m"`, `"1h 5m"`).
fn duration(v: &Dynamic) -> Result<Duration, Box<EvalAltResult>> {
    if let Some(i) = v.clone().try_cast::<INT>() {
        return Ok(Duration::from_secs(i.max(0) as u64));
    }
    if let Some(f) = v.clone().try_cast::<FLOAT>() {
        return Ok(Duration::from_secs_f64(f.max(0.0)));
    }
    if let Some(s) = v.clone().try_cast::<ImmutableString>() {
        return humantime::parse_duration(s.trim())
            .map_err(|e| fail(format!("`{s}` is not a duration: {e}")));
    }
    Err(fail(format!(
        "a duration is seconds or text like \"31m\", not {}",
        v.type_name()
    )))
}

fn seconds(v: &Dynamic) -> Result<f64, Box<EvalAltResult>> {
    duration(v).map(|d| d.as_secs_f64())
}

fn to_dynamic(v: &impl serde::Serialize) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn run_map(run: &SimRun) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut v = serde_json::to_value(run).map_err(|e| fail(e.to_string()))?;
    v["log"] = run.logs.join("\n").into();
    to_dynamic(&v)
}

fn runs_array(runs: &[SimRun]) -> Result<Array, Box<EvalAltResult>> {
    runs.iter().map(run_map).collect()
}

fn sim_err(e: crate::sim::driver::SimError) -> Box<EvalAltResult> {
    fail(e.to_string())
}

impl World {
    fn alert(&self, name: &str, status: &str) -> Result<Array, Box<EvalAltResult>> {
        let runs = self
            .0
            .alert(name, status, Value::Object(Default::default()))
            .map_err(sim_err)?;
        runs_array(&runs)
    }

    fn run(&self, playbook: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
        for k in opts.keys() {
            if !matches!(k.as_str(), "params" | "dry_run") {
                return Err(fail(format!(
                    "run(playbook, opts): unknown option `{k}` (params, dry_run)"
                )));
            }
        }
        let params: Value = match opts.get("params") {
            Some(p) => rhai::serde::from_dynamic(p)?,
            None => Value::Object(Default::default()),
        };
        let dry_run = opts
            .get("dry_run")
            .map(|d| {
                d.as_bool()
                    .map_err(|_| fail("dry_run must be true or false"))
            })
            .transpose()?
            .unwrap_or(false);
        let run = self
            .0
            .run_manual(playbook, params, dry_run)
            .map_err(sim_err)?;
        run_map(&run)
    }

    fn incident(&self) -> Result<Dynamic, Box<EvalAltResult>> {
        match self.0.latest_incident().map_err(sim_err)? {
            None => Ok(Dynamic::UNIT),
            Some(i) => {
                let mut v = serde_json::to_value(&i).map_err(|e| fail(e.to_string()))?;
                v["age_seconds"] = ((self.0.now_ms() - i.opened_at) as f64 / 1000.0).into();
                to_dynamic(&v)
            }
        }
    }

    /// Applies one world change, as a scenario step would, and notes it in the timeline.
    fn change(&self, change: Change) -> Result<(), Box<EvalAltResult>> {
        if let Some(line) = self
            .0
            .world
            .apply(&change)
            .map_err(|e| fail(e.to_string()))?
        {
            self.0.note("world", line);
        }
        Ok(())
    }
}

/// Compares as JSON, with integers and floats of the same value equal.
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    let a: Value = rhai::serde::from_dynamic(a).unwrap_or(Value::Null);
    let b: Value = rhai::serde::from_dynamic(b).unwrap_or(Value::Null);
    json_eq(&a, &b)
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn show(v: &Dynamic) -> String {
    if v.is_string() {
        format!("{v:?}")
    } else if v.is_unit() {
        "()".into()
    } else {
        rhai::serde::from_dynamic::<Value>(v)
            .map(|j| j.to_string())
            .unwrap_or_else(|_| v.to_string())
    }
}

fn with_message(what: String, message: &str) -> Box<EvalAltResult> {
    if message.is_empty() {
        fail(what)
    } else {
        fail(format!("{message}: {what}"))
    }
}

fn assert_eq(actual: Dynamic, expected: Dynamic, message: &str) -> Result<(), Box<EvalAltResult>> {
    if same(&actual, &expected) {
        Ok(())
    } else {
        Err(with_message(
            format!("expected {}, got {}", show(&expected), show(&actual)),
            message,
        ))
    }
}

fn assert_ne(actual: Dynamic, other: Dynamic, message: &str) -> Result<(), Box<EvalAltResult>> {
    if same(&actual, &other) {
        Err(with_message(
            format!("expected anything but {}", show(&other)),
            message,
        ))
    } else {
        Ok(())
    }
}

/// `haystack` (text, or an array of values) contains `needle` (text inside a string, or
/// an equal element).
fn assert_contains(
    haystack: Dynamic,
    needle: Dynamic,
    message: &str,
) -> Result<(), Box<EvalAltResult>> {
    let text_in = |h: &Dynamic| -> bool {
        match (h.clone().into_string(), needle.clone().into_string()) {
            (Ok(h), Ok(n)) => h.contains(&n),
            _ => false,
        }
    };
    let found = if haystack.is_string() {
        text_in(&haystack)
    } else if let Some(items) = haystack.clone().try_cast::<Array>() {
        items.iter().any(|i| same(i, &needle) || text_in(i))
    } else {
        false
    };
    if found {
        Ok(())
    } else {
        Err(with_message(
            format!("{} does not contain {}", show(&haystack), show(&needle)),
            message,
        ))
    }
}

/// The test engine: the world API and the assertions, no primitives (tests drive
/// playbooks; they do not act themselves). `import` in a test file resolves as a
/// playbook's does: inside the playbook directory, at compile time only.
pub fn engine(playbook_dir: &std::path::Path) -> Engine {
    let mut e = Engine::new();
    e.set_module_resolver(crate::engine::modules::ConfinedResolver::new(playbook_dir));
    e.set_max_operations(50_000_000);
    e.set_max_call_levels(64);
    e.set_max_expr_depths(128, 128);
    e.disable_symbol("eval");
    e.on_print(|_| {});
    e.register_type_with_name::<World>("World");
    e.register_fn("world", new_world);
    approvals::register(&mut e);
    replay::register(&mut e);

    // ── the world, before and during the outage ──
    world::register(&mut e);

    // ── driving it ──
    e.register_fn("alert", |w: &mut World, name: &str| w.alert(name, "firing"));
    e.register_fn("alert", |w: &mut World, name: &str, status: &str| {
        w.alert(name, status)
    });
    e.register_fn("alert", |w: &mut World, name: &str, opts: Map| {
        w.alert_opts(name, opts)
    });
    e.register_fn("resolve", |w: &mut World, name: &str| {
        w.alert(name, "resolved")
    });
    e.register_fn("run", |w: &mut World, playbook: &str| {
        w.run(playbook, Map::new())
    });
    e.register_fn("run", |w: &mut World, playbook: &str, opts: Map| {
        w.run(playbook, opts)
    });
    e.register_fn(
        "advance",
        |w: &mut World, by: Dynamic| -> Result<Array, Box<EvalAltResult>> {
            let runs = w.0.advance(duration(&by)?).map_err(sim_err)?;
            runs_array(&runs)
        },
    );

    // ── reading it ──
    e.register_fn("now", |w: &mut World| -> FLOAT {
        w.0.now_ms() as FLOAT / 1000.0
    });
    e.register_fn(
        "breaker",
        |w: &mut World| -> Result<String, Box<EvalAltResult>> {
            w.0.world
                .breaker_state("stripe")
                .map(String::from)
                .map_err(|e| fail(e.to_string()))
        },
    );
    e.register_fn(
        "breaker",
        |w: &mut World, name: &str| -> Result<String, Box<EvalAltResult>> {
            w.0.world
                .breaker_state(name)
                .map(String::from)
                .map_err(|e| fail(e.to_string()))
        },
    );
    e.register_fn(
        "payment_status",
        |w: &mut World, id: &str| -> Result<String, Box<EvalAltResult>> {
            w.0.world
                .state()
                .payments
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.status.clone())
                .ok_or_else(|| fail(format!("no payment `{id}` in this world")))
        },
    );
    e.register_fn("incident", |w: &mut World| w.incident());
    e.register_fn(
        "notifications",
        |w: &mut World| -> Result<Dynamic, Box<EvalAltResult>> {
            to_dynamic(&w.0.notifications().map_err(sim_err)?)
        },
    );
    e.register_fn("runs", |w: &mut World| runs_array(&w.0.runs()));
    e.register_fn("timeline", |w: &mut World| -> Array {
        w.0.timeline()
            .into_iter()
            .map(|h| Dynamic::from(h.text))
            .collect()
    });

    // ── assertions ──
    e.register_fn("assert", |c: bool| -> Result<(), Box<EvalAltResult>> {
        if c {
            Ok(())
        } else {
            Err(fail("assertion failed"))
        }
    });
    e.register_fn(
        "assert",
        |c: bool, message: &str| -> Result<(), Box<EvalAltResult>> {
            if c {
                Ok(())
            } else {
                Err(fail(format!("assertion failed: {message}")))
            }
        },
    );
    e.register_fn("assert_eq", |a: Dynamic, b: Dynamic| assert_eq(a, b, ""));
    e.register_fn("assert_eq", |a: Dynamic, b: Dynamic, m: &str| {
        assert_eq(a, b, m)
    });
    e.register_fn("assert_ne", |a: Dynamic, b: Dynamic| assert_ne(a, b, ""));
    e.register_fn("assert_ne", |a: Dynamic, b: Dynamic, m: &str| {
        assert_ne(a, b, m)
    });
    e.register_fn("assert_contains", |h: Dynamic, n: Dynamic| {
        assert_contains(h, n, "")
    });
    e.register_fn("assert_contains", |h: Dynamic, n: Dynamic, m: &str| {
        assert_contains(h, n, m)
    });
    e
}
