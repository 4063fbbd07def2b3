//! `backends()`: which backends this daemon has and whether they answer — the first thing
//! an on-call engineer checks, and what the shipped `health_probe` playbook reports.

use std::time::Duration;

use rhai::{Engine, EvalAltResult, Map};

use super::{block_on, with_run};

/// `"ok"`, `"not configured"`, or `"error: ..."` for one probe.
fn probe<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<String, Box<EvalAltResult>> {
    match block_on(what, Duration::from_secs(5), fut) {
        Ok(_) => Ok("ok".into()),
        Err(e) if e.is_catchable() => Ok(format!(
            "error: {}",
            e.to_string().trim_start_matches("Runtime error: ")
        )),
        Err(e) => Err(e),
    }
}

fn backends() -> Result<Map, Box<EvalAltResult>> {
    let services = with_run("backends()", |ctx| Ok(ctx.services.clone()))?;
    let mut out = Map::new();
    let state = match services.store {
        None => "not configured".to_string(),
        Some(store) => probe("state store", async move { store.ping().await })?,
    };
    out.insert("state".into(), state.into());
    let payments = services.payments.clone();
    let status = if payments.configured() {
        probe("payments database", async move {
            payments.backend()?.ping().await
        })?
    } else {
        "not configured".to_string()
    };
    out.insert("payments".into(), status.into());
    for name in services.breakers.names() {
        let breakers = services.breakers.clone();
        let n = name.clone();
        let status = match probe(&format!("breaker {name}"), async move {
            breakers.read(&n).await
        })? {
            s if s.contains("is not configured") => "not configured".to_string(),
            s => s,
        };
        out.insert(format!("breaker:{name}").into(), status.into());
    }
    Ok(out)
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("backends", || {
        super::recorder::read("backends", vec![], backends)
    });
}
