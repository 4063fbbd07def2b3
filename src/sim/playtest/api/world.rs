//! The world's setters of playbook tests (`w.stripe_status(…)`, `w.celery_workers(n)`, …):
//! each is one [`Change`] of the simulated world, the same a scenario step makes.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT};
use serde_json::Value;

use super::{duration, fail, seconds, to_dynamic, World};
use crate::sim::change::Change;

pub(super) fn register(e: &mut Engine) {
    e.register_fn(
        "stripe_status",
        |w: &mut World, indicator: &str, description: &str| {
            w.change(Change::StripeStatus {
                indicator: indicator.into(),
                description: description.into(),
            })
        },
    );
    e.register_fn("stripe_status_page_down", |w: &mut World| {
        w.change(Change::StripeStatusPageDown)
    });
    e.register_fn("stripe_api_down", |w: &mut World| {
        w.change(Change::StripeApiDown(true))
    });
    e.register_fn("stripe_api_up", |w: &mut World| {
        w.change(Change::StripeApiDown(false))
    });
    e.register_fn("stripe_recovers", |w: &mut World| {
        w.change(Change::StripeRecovers)
    });
    e.register_fn("stripe_key", |w: &mut World, key: &str| {
        w.change(Change::StripeKey(
            (!key.is_empty()).then(|| key.to_string()),
        ))
    });
    e.register_fn("stripe_rejects_key", |w: &mut World| {
        w.change(Change::StripeRejectsKey)
    });
    e.register_fn(
        "stripe_latency",
        |w: &mut World, ms: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let ms = ms
                .as_float()
                .or_else(|_| ms.as_int().map(|i| i as FLOAT))
                .map_err(|_| fail("stripe_latency(ms): a number of milliseconds"))?;
            w.change(Change::StripeLatency(ms))
        },
    );
    e.register_fn("stripe_rate_limited", |w: &mut World| {
        w.change(Change::StripeRateLimited)
    });
    e.register_fn("intent", |w: &mut World, id: &str, status: &str| {
        w.change(Change::Intent {
            id: id.into(),
            status: status.into(),
            payment_id: None,
        })
    });
    e.register_fn(
        "intent",
        |w: &mut World, id: &str, status: &str, payment_id: &str| {
            w.change(Change::Intent {
                id: id.into(),
                status: status.into(),
                payment_id: Some(payment_id.into()),
            })
        },
    );
    e.register_fn("undelivered_event", |w: &mut World, kind: &str| {
        w.change(Change::UndeliveredEvents {
            kinds: vec![kind.into()],
            ago: Duration::from_secs(60),
        })
    });
    e.register_fn("webhook_endpoint", |w: &mut World, status: INT| {
        w.change(Change::WebhookEndpoint(
            u16::try_from(status).ok().filter(|s| *s > 0),
        ))
    });
    e.register_fn("webhook_secret", |w: &mut World, secret: &str| {
        w.change(Change::WebhookSecret(
            (!secret.is_empty()).then(|| secret.to_string()),
        ))
    });
    e.register_fn("no_webhook_url", |w: &mut World| {
        w.change(Change::NoWebhookUrl)
    });
    e.register_fn("app_webhook_secret", |w: &mut World, secret: &str| {
        w.change(Change::AppWebhookSecret(secret.into()))
    });
    e.register_fn("signed_probe", |w: &mut World| {
        w.change(Change::SignedProbe)
    });
    e.register_fn("worker_log", |w: &mut World, line: &str| {
        w.change(Change::WorkerLog {
            line: line.into(),
            ago: Duration::ZERO,
        })
    });
    e.register_fn("webhooks_received", |w: &mut World, n: INT| {
        w.change(Change::WebhooksReceived(n))
    });
    e.register_fn(
        "payment",
        |w: &mut World, status: &str, age: Dynamic| -> Result<String, Box<EvalAltResult>> {
            Ok(w.0.world.add_payment(status, seconds(&age)?, None))
        },
    );
    e.register_fn(
        "payment",
        |w: &mut World,
         status: &str,
         age: Dynamic,
         processor_ref: &str|
         -> Result<String, Box<EvalAltResult>> {
            Ok(w.0
                .world
                .add_payment(status, seconds(&age)?, Some(processor_ref.into())))
        },
    );
    e.register_fn("status_page_down", |w: &mut World| {
        w.change(Change::StatusPage(Some(true)))
    });
    e.register_fn("status_page_up", |w: &mut World| {
        w.change(Change::StatusPage(Some(false)))
    });
    e.register_fn("no_status_page", |w: &mut World| {
        w.change(Change::StatusPage(None))
    });
    e.register_fn(
        "status_page",
        |w: &mut World| -> Result<Dynamic, Box<EvalAltResult>> {
            to_dynamic(&w.0.world.status_page_view())
        },
    );
    e.register_fn("celery_down", |w: &mut World| {
        w.change(Change::Celery(Some(true)))
    });
    e.register_fn("celery_up", |w: &mut World| {
        w.change(Change::Celery(Some(false)))
    });
    e.register_fn("no_celery", |w: &mut World| w.change(Change::Celery(None)));
    e.register_fn("celery_workers", |w: &mut World, n: INT| {
        w.change(Change::CeleryWorkers(n.max(0) as usize))
    });
    e.register_fn("worker_hung", |w: &mut World| w.change(Change::WorkerHung));
    e.register_fn(
        "payment_tasks",
        |w: &mut World, active: INT, reserved: INT| {
            w.change(Change::PaymentTasks {
                active: active.max(0) as usize,
                reserved: reserved.max(0) as usize,
            })
        },
    );
    e.register_fn("queued_payments", |w: &mut World, n: INT| {
        w.change(Change::QueuedPayments(n.max(0) as usize))
    });
    e.register_fn("payments_down", |w: &mut World| {
        w.change(Change::PaymentsDown)
    });
    e.register_fn(
        "open_breaker",
        |w: &mut World, ago: Dynamic| -> Result<(), Box<EvalAltResult>> {
            w.change(Change::OpenBreaker {
                name: "stripe".into(),
                ago: duration(&ago)?,
            })
        },
    );
    e.register_fn(
        "open_breaker",
        |w: &mut World, name: &str, ago: Dynamic| -> Result<(), Box<EvalAltResult>> {
            w.change(Change::OpenBreaker {
                name: name.into(),
                ago: duration(&ago)?,
            })
        },
    );
    e.register_fn("breaker_stuck", |w: &mut World| {
        w.change(Change::BreakerStuck)
    });
    e.register_fn("app_failing", |w: &mut World, failing: bool| {
        w.change(Change::AppFailing(failing))
    });
    e.register_fn(
        "set_payment_status",
        |w: &mut World, id: &str, status: &str| {
            w.change(Change::PaymentSettled {
                id: id.into(),
                status: status.into(),
            })
        },
    );
    e.register_fn(
        "setting",
        |w: &mut World, name: &str, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let v: Value = rhai::serde::from_dynamic(&value)?;
            w.0.world.state().settings.insert(name.into(), v);
            Ok(())
        },
    );
}
