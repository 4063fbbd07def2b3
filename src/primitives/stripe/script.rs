//! The `stripe::*` module scripts call.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Module, INT};
use serde::Serialize;

use super::Stripe;
use crate::primitives::{block_on, with_run};

const LIMIT: Duration = Duration::from_secs(60);

fn stripe() -> Result<Stripe, Box<EvalAltResult>> {
    with_run("stripe", |ctx| Ok(ctx.services.stripe.clone()))
}

fn dynamic<T: Serialize>(v: &T) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("status", || {
        crate::primitives::recorder::read("stripe::status", vec![], || {
            let s = stripe()?;
            let page = block_on("stripe::status", LIMIT, async move {
                Ok::<_, std::convert::Infallible>(s.status_page().await)
            })?;
            dynamic(&page)
        })
    });
    m.set_native_fn("ping", || {
        crate::primitives::recorder::read("stripe::ping", vec![], || {
            let s = stripe()?;
            let ping = block_on("stripe::ping", LIMIT, async move {
                Ok::<_, std::convert::Infallible>(s.ping().await)
            })?;
            dynamic(&ping)
        })
    });
    m.set_native_fn("key_info", || {
        crate::primitives::recorder::read("stripe::key_info", vec![], || {
            dynamic(&stripe()?.key_info())
        })
    });
    m.set_native_fn("payment_intent", |id: &str| {
        crate::primitives::recorder::read(
            "stripe::payment_intent",
            vec![serde_json::json!(id)],
            || {
                let s = stripe()?;
                let id = id.to_string();
                let pi = block_on("stripe::payment_intent", LIMIT, async move {
                    s.payment_intent(&id).await
                })?;
                match pi {
                    Some(pi) => dynamic(&pi),
                    None => Ok(Dynamic::UNIT),
                }
            },
        )
    });
    m.set_native_fn("intents_for_payment", |payment_id: &str| {
        crate::primitives::recorder::read(
            "stripe::intents_for_payment",
            vec![serde_json::json!(payment_id)],
            || {
                let s = stripe()?;
                let id = payment_id.to_string();
                let list = block_on("stripe::intents_for_payment", LIMIT, async move {
                    s.intents_for_payment(&id).await
                })?;
                list.iter().map(dynamic).collect::<Result<Array, _>>()
            },
        )
    });
    m.set_native_fn("failed_events", |since_seconds_ago: INT| {
        crate::primitives::recorder::read(
            "stripe::failed_events",
            vec![serde_json::json!(since_seconds_ago)],
            || {
                let s = stripe()?;
                let now = with_run("stripe::failed_events", |ctx| {
                    Ok(ctx.services.clock.now_ms())
                })?;
                let since = now / 1000 - since_seconds_ago.max(0);
                let list = block_on("stripe::failed_events", LIMIT, async move {
                    s.failed_events(since, 100).await
                })?;
                list.iter().map(dynamic).collect::<Result<Array, _>>()
            },
        )
    });
    m.set_native_fn("webhook_endpoints", || {
        crate::primitives::recorder::read("stripe::webhook_endpoints", vec![], || {
            let s = stripe()?;
            let list = block_on("stripe::webhook_endpoints", LIMIT, async move {
                s.webhook_endpoints().await
            })?;
            list.iter().map(dynamic).collect::<Result<Array, _>>()
        })
    });
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_static_module("stripe", module().into());
}
