//! `backends()`: which backends this daemon has and whether they answer — the first thing
//! an on-call engineer checks, and what the shipped `health_probe` playbook reports.

use std::time::Duration;

use rhai::{Engine, EvalAltResult, Map};

use super::{block_on, with_run};

fn backends() -> Result<Map, Box<EvalAltResult>> {
    let store = with_run("backends()", |ctx| Ok(ctx.services.store.clone()))?;
    let mut out = Map::new();
    let state = match store {
        None => "not configured".to_string(),
        Some(store) => {
            match block_on("state store", Duration::from_secs(5), async move {
                store.ping().await
            }) {
                Ok(()) => "ok".to_string(),
                Err(e) if e.is_catchable() => format!("error: {e}"),
                Err(e) => return Err(e),
            }
        }
    };
    out.insert("state".into(), state.into());
    Ok(out)
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("backends", backends);
}
