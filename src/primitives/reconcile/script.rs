//! `reconcile(#{ … })` and `reconcile_apply(changes)`: the Rhai face of [`super::reconcile`]
//! and [`super::apply_plan`] — options read from the script's map, the changes recorded as
//! the run's actions, one log line of counts.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use super::{apply_plan, reconcile, Auditor, Change, Options, Report};
use crate::primitives::{
    block_on, core::append_log, script_error, with_run, ActionOutcome, ActionRecord,
};

fn options_from(map: &Map, dry_run: bool) -> Result<Options, Box<EvalAltResult>> {
    let mut o = Options {
        dry_run,
        ..Default::default()
    };
    for (k, v) in map {
        let bad = |what: &str| script_error(format!("reconcile(): `{k}` must be {what}"));
        match k.as_str() {
            "older_than" => {
                let s = v.as_int().map(|i| i as f64).or_else(|_| v.as_float()).map_err(|_| bad("seconds"))?;
                o.older_than = Duration::from_secs_f64(s.max(0.0));
            }
            "limit" => o.limit = v.as_int().map_err(|_| bad("an integer"))?.max(1),
            "plan" => o.plan = v.as_bool().map_err(|_| bad("true or false"))?,
            "concurrency" => o.concurrency = v.as_int().map_err(|_| bad("an integer"))?.clamp(1, 256) as usize,
            "breaker" => {
                o.breaker = if v.is_unit() { None } else { Some(v.clone().into_string().map_err(|_| bad("a breaker name or ()"))?) }
            }
            "check_failed_within" => {
                o.check_failed_within = if v.is_unit() { None } else { Some(Duration::from_secs(v.as_int().map_err(|_| bad("seconds or ()"))?.max(0) as u64)) }
            }
            "mapping" => {
                let m = v.clone().try_cast::<Map>().ok_or_else(|| bad("a map of Stripe status to payment status"))?;
                o.mapping = m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            }
            other => return Err(script_error(format!(
                "reconcile(): unknown option `{other}` (older_than, limit, concurrency, breaker, check_failed_within, mapping, plan)"
            ))),
        }
    }
    Ok(o)
}

/// What both entry points take from the calling run: its backends, whether it is a dry
/// run, and who its changes are audited as (under the run's fence).
fn caller(what: &str) -> Result<(crate::primitives::Services, bool, Auditor), Box<EvalAltResult>> {
    let (services, dry_run, run_id, playbook) = with_run(what, |ctx| {
        Ok((
            ctx.services.clone(),
            ctx.dry_run,
            ctx.run_id.clone(),
            ctx.playbook.clone(),
        ))
    })?;
    let auditor = Auditor {
        store: services.store.clone(),
        run_id: Some(run_id),
        actor: format!("playbook:{playbook}"),
        fence: crate::primitives::current_fence(),
    };
    Ok((services, dry_run, auditor))
}

fn run(opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let (services, dry_run, auditor) = caller("reconcile()")?;
    let options = options_from(&opts, dry_run)?;
    let plan = options.plan;
    // Bounded by the run's deadline: thousands of payments at 25 req/s take minutes.
    // The report is recorded as it came back: a replay answers it (and records the same
    // changes) without reading or touching a payment.
    let args = vec![crate::primitives::recorder::arg(Dynamic::from_map(opts))];
    let report = crate::primitives::recorder::read_json("reconcile", args, || {
        block_on("reconcile()", Duration::from_secs(24 * 3600), async move {
            reconcile(&services, &options, &auditor).await
        })
    })?;
    finish(report, plan, "reconcile")
}

/// `reconcile_apply(plan.changes)`: [`apply_plan`] from a script.
fn apply(changes: rhai::Array) -> Result<Dynamic, Box<EvalAltResult>> {
    let (services, dry_run, auditor) = caller("reconcile_apply()")?;
    let changes: Vec<Change> = rhai::serde::from_dynamic(&Dynamic::from_array(changes))
        .map_err(|e| {
            script_error(format!(
                "reconcile_apply(): the plan's changes are reconcile(#{{ plan: true }}).changes: {e}"
            ))
        })?;
    let args = vec![serde_json::to_value(&changes).unwrap_or_default()];
    let report = crate::primitives::recorder::read_json("reconcile_apply", args, || {
        block_on(
            "reconcile_apply()",
            Duration::from_secs(24 * 3600),
            async move {
                Ok::<_, std::convert::Infallible>(
                    apply_plan(&services, &auditor, changes, dry_run).await,
                )
            },
        )
    })?;
    finish(report, false, "reconcile_apply")
}

/// Records the applied (or, in a dry run, planned) changes on the run and logs the counts.
fn finish(report: Report, plan: bool, what: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    with_run("reconcile()", |ctx| {
        let mut actions = ctx.actions.borrow_mut();
        for c in report
            .changes
            .iter()
            .filter(|c| c.applied || (report.dry_run && !plan))
        {
            let target = format!("payment:{}", c.payment_id);
            actions.push(
                ActionRecord {
                    action: "payments.set_status",
                    target: &target,
                    dry_run: report.dry_run,
                    outcome: ActionOutcome::of(report.dry_run),
                    details: serde_json::to_value(c).unwrap_or_default(),
                    result: None,
                    error: None,
                }
                .at(ctx.services.clock.now_ms()),
            );
        }
        Ok(())
    })?;
    append_log(
        "info",
        &format!(
            "{what}: checked {}, updated {}, unchanged {}, superseded {}, inconsistencies {}, errors {}{}{}{}",
            report.checked,
            report.updated,
            report.unchanged,
            report.superseded,
            report.inconsistencies.len(),
            report.errors.len(),
            if report.dry_run { " (dry run)" } else { "" },
            if plan { format!(" (a plan of {} change(s), none made)", report.changes.len()) } else { String::new() },
            report.stopped.as_ref().map(|s| format!("; stopped: {s}")).unwrap_or_default(),
        ),
    );
    rhai::serde::to_dynamic(&report)
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("reconcile", || run(Map::new()));
    engine.register_fn("reconcile", run);
    engine.register_fn("reconcile_apply", apply);
}
