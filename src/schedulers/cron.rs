//! The cron scheduler: fires playbooks on their `#{ cron: "..." }` schedules.
//!
//! Each (playbook, schedule) has a mark in the store — the last tick it fired for. A tick
//! fires only for the process that moves the mark (compare-and-set), so a restart never
//! repeats a tick and replicas sharing the store fire each tick once. After downtime at most
//! `max_catch_up` missed ticks fire (the most recent), never a day's worth. A reloaded
//! playbook is rescheduled at once.

use std::{sync::Arc, time::Duration};

use chrono::{Offset, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    config::CronConfig,
    dispatch::Dispatcher,
    engine::Catalog,
    event::RunRequest,
    store::{RunRecord, Store, StoreError},
    triggers::{parse_cron, TriggerSpec},
};

pub use crate::clock::zone::Zone;

/// Ticks after `mark` up to `now` that should fire now (the last `max_catch_up` of them),
/// and the new mark (the latest tick not after `now`), if any tick passed.
pub fn due(
    schedule: &::cron::Schedule,
    zone: &Zone,
    mark: i64,
    now: i64,
    max_catch_up: u32,
) -> (Vec<i64>, Option<i64>) {
    let mut passed = zone.ticks(schedule, mark, now, 1_000_000);
    let new_mark = passed.last().copied();
    let keep = (max_catch_up as usize).min(passed.len());
    (passed.split_off(passed.len() - keep), new_mark)
}

/// What one pass over the cron triggers found.
#[derive(Debug, Default)]
pub struct Pass {
    /// When the next tick of any schedule is due (unix ms).
    pub next: Option<i64>,
    /// Triggers whose tick could not be fired (playbook, schedule, why); tried again later.
    pub failed: Vec<(String, String, StoreError)>,
}

/// One pass at `now` over the cron triggers of every playbook (or of `only` these, as a
/// scenario names them): fires what is due. The daemon's loop and a simulation's virtual
/// clock both call this; the first look at a schedule only sets its mark, as in a daemon
/// that just started.
pub async fn pass(
    catalog: &Catalog,
    only: Option<&[String]>,
    dispatcher: &Dispatcher,
    store: &Store,
    cfg: &CronConfig,
    now: i64,
) -> Pass {
    let zone = cfg.zone().unwrap_or(Zone::Fixed(Utc.fix()));
    let mut pass = Pass::default();
    for pb in catalog.playbooks() {
        if only.is_some_and(|only| !only.contains(&pb.name)) {
            continue;
        }
        for t in &pb.triggers {
            let TriggerSpec::Cron { cron: expr } = t else {
                continue;
            };
            let Ok(schedule) = parse_cron(expr) else {
                continue;
            };
            let trigger = Trigger {
                playbook: &pb.name,
                expr,
                schedule: &schedule,
                zone: &zone,
            };
            match tick(dispatcher, store, &trigger, now, cfg.max_catch_up).await {
                Ok(next) => pass.next = earliest(pass.next, next),
                Err(e) => pass.failed.push((pb.name.clone(), expr.clone(), e)),
            }
        }
    }
    pass
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs the scheduler until `stop`: a pass, then a sleep until the next tick is due (at
/// most a minute; 5 s after a failed tick), or until a playbook is reloaded.
pub async fn run(
    catalog: Arc<Catalog>,
    dispatcher: Dispatcher,
    store: Store,
    cfg: CronConfig,
    stop: CancellationToken,
) {
    let mut changes = catalog.subscribe();
    loop {
        let now = store.now();
        let pass = pass(&catalog, None, &dispatcher, &store, &cfg, now).await;
        let mut wake = earliest(Some(now + 60_000), pass.next).unwrap_or(now + 60_000);
        for (playbook, expr, e) in &pass.failed {
            tracing::warn!(%playbook, cron = %expr, error = %e, "cron tick failed; retrying in 5 s");
            wake = wake.min(now + 5_000);
        }
        let sleep = Duration::from_millis((wake - store.now()).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            r = changes.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// One cron trigger of one playbook.
struct Trigger<'a> {
    playbook: &'a str,
    expr: &'a str,
    schedule: &'a ::cron::Schedule,
    zone: &'a Zone,
}

/// Fires what is due for one trigger; returns when it is next due (unix ms).
async fn tick(
    dispatcher: &Dispatcher,
    store: &Store,
    t: &Trigger<'_>,
    now: i64,
    max_catch_up: u32,
) -> Result<Option<i64>, StoreError> {
    let (playbook, expr) = (t.playbook, t.expr);
    let mark = store.cron_mark(playbook, expr).await?;
    let Some(mark) = mark else {
        // First sight: start counting from now; nothing in the past fires.
        store.advance_cron_mark(playbook, expr, None, now).await?;
        return Ok(t.zone.next(t.schedule, now));
    };
    let (fires, new_mark) = due(t.schedule, t.zone, mark, now, max_catch_up);
    let mut current = mark;
    if let Some(new_mark) = new_mark {
        let runs: Vec<RunRecord> = fires
            .iter()
            .map(|at| {
                RunRecord::unowned(RunRequest::cron(playbook, expr, &t.zone.format(*at)), now)
            })
            .collect();
        if store
            .fire_cron_ticks(playbook, expr, mark, new_mark, &runs)
            .await?
        {
            current = new_mark;
            for run in &runs {
                let tick = run
                    .event
                    .params
                    .get("scheduled_for")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                tracing::info!(playbook, cron = expr, tick, run = %run.id, "cron fired");
            }
            if !runs.is_empty() {
                dispatcher.wake_claimer();
            }
        }
    }
    Ok(t.zone.next(t.schedule, current.max(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> Zone {
        Zone::parse("UTC").expect("utc")
    }

    #[test]
    fn downtime_fires_at_most_the_configured_catch_up() {
        let every_minute = parse_cron("* * * * *").expect("cron");
        let mark = 1_764_000_000_000; // on a minute boundary
        let now = mark + 10 * 60_000 + 5_000; // ten ticks missed
        let (fires, new_mark) = due(&every_minute, &utc(), mark, now, 1);
        assert_eq!(
            fires,
            vec![mark + 10 * 60_000],
            "only the latest missed tick"
        );
        assert_eq!(new_mark, Some(mark + 10 * 60_000));
        let (fires, _) = due(&every_minute, &utc(), mark, now, 0);
        assert!(fires.is_empty());
        let (fires, _) = due(&every_minute, &utc(), mark, now, 3);
        assert_eq!(fires.len(), 3);
    }

    #[test]
    fn nothing_due_before_the_next_tick() {
        let hourly = parse_cron("0 * * * *").expect("cron");
        let mark = 1_764_000_000_000;
        let (fires, new_mark) = due(&hourly, &utc(), mark, mark + 59 * 60_000, 1);
        assert!(fires.is_empty());
        assert_eq!(new_mark, None);
    }

    #[test]
    fn schedules_read_in_the_configured_zone() {
        let nine = parse_cron("0 9 * * *").expect("cron");
        let plus2 = Zone::parse("+02:00").expect("offset");
        // 2025-11-24T00:00:00Z; 09:00 at +02:00 is 07:00Z.
        let mark = 1_763_942_400_000;
        let (fires, _) = due(&nine, &plus2, mark, mark + 24 * 3_600_000, 1);
        assert_eq!(fires, vec![mark + 7 * 3_600_000]);
    }

    #[test]
    fn named_zones_follow_daylight_saving_time() {
        let nine = parse_cron("0 9 * * *").expect("cron");
        let berlin = Zone::parse("Europe/Berlin").expect("IANA zone");
        // 2026-03-28T00:00Z: 09:00 in Berlin is 08:00Z (CET); the next day, after the
        // switch to summer time, it is 07:00Z (CEST).
        let day = 86_400_000;
        let mark = 1_774_656_000_000;
        let ticks = berlin.ticks(&nine, mark, mark + 2 * day, 10);
        assert_eq!(
            ticks,
            vec![mark + 8 * 3_600_000, mark + day + 7 * 3_600_000]
        );
        assert_eq!(Zone::parse("Mars/Olympus"), None);
        assert!(berlin.format(mark + 8 * 3_600_000).ends_with("+01:00"));
    }
}
