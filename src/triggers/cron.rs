//! The cron trigger: fires playbooks on their `#{ cron: "..." }` schedules.
//!
//! Each (playbook, schedule) has a mark in the store — the last tick it fired for. A tick
//! fires only for the process that moves the mark (compare-and-set), so a restart never
//! repeats a tick and replicas sharing the store fire each tick once. After downtime at most
//! `max_catch_up` missed ticks fire (the most recent), never a day's worth. A reloaded
//! playbook is rescheduled at once.

use std::{sync::Arc, time::Duration};

use chrono::{Offset, Utc};
use serde_json::{json, Map};
use tokio_util::sync::CancellationToken;

use super::{parse_cron, Event, TriggerSpec};
use crate::{
    config::CronConfig,
    dispatch::{Dispatcher, RunRequest},
    engine::Catalog,
    store::{Store, Trigger},
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

/// Runs the scheduler until `stop`, on the store's clock.
pub async fn run(
    catalog: Arc<Catalog>,
    dispatcher: Dispatcher,
    store: Store,
    cfg: CronConfig,
    stop: CancellationToken,
) {
    let tz = cfg.zone().unwrap_or(Zone::Fixed(Utc.fix()));
    let mut changes = catalog.subscribe();
    loop {
        let now = store.now();
        let mut wake = now + 60_000;
        for pb in catalog.playbooks() {
            for t in &pb.triggers {
                let TriggerSpec::Cron { cron: expr } = t else {
                    continue;
                };
                let Ok(schedule) = parse_cron(expr) else {
                    continue;
                };
                match tick(
                    &dispatcher,
                    &store,
                    &pb.name,
                    expr,
                    &schedule,
                    &tz,
                    now,
                    cfg.max_catch_up,
                )
                .await
                {
                    Ok(next) => {
                        if let Some(n) = next {
                            wake = wake.min(n);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(playbook = %pb.name, cron = %expr, error = %e, "cron tick failed; retrying in 5 s");
                        wake = wake.min(now + 5_000);
                    }
                }
            }
        }
        let sleep = Duration::from_millis((wake - store.now()).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            r = changes.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Fires what is due for one trigger; returns when it is next due (unix ms).
#[allow(clippy::too_many_arguments)]
pub async fn tick(
    dispatcher: &Dispatcher,
    store: &Store,
    playbook: &str,
    expr: &str,
    schedule: &::cron::Schedule,
    tz: &Zone,
    now: i64,
    max_catch_up: u32,
) -> Result<Option<i64>, crate::store::StoreError> {
    let mark = store.cron_mark(playbook, expr).await?;
    let Some(mark) = mark else {
        // First sight: start counting from now; nothing in the past fires.
        store.advance_cron_mark(playbook, expr, None, now).await?;
        return Ok(tz.next(schedule, now));
    };
    let (fires, new_mark) = due(schedule, tz, mark, now, max_catch_up);
    let mut current = mark;
    if let Some(new_mark) = new_mark {
        let runs: Vec<_> = fires
            .iter()
            .map(|t| {
                let scheduled = tz.format(*t);
                let mut params = Map::new();
                params.insert("scheduled_for".into(), json!(scheduled));
                let event = Event {
                    kind: crate::triggers::EventKind::Cron,
                    name: expr.to_string(),
                    status: String::new(),
                    labels: Map::new(),
                    annotations: Map::new(),
                    params,
                    incident: None,
                    dry_run: false,
                    approval: None,
                };
                Dispatcher::internal_record(
                    RunRequest {
                        playbook: playbook.to_string(),
                        event,
                        trigger: Trigger {
                            kind: crate::triggers::EventKind::Cron,
                            name: expr.to_string(),
                            actor: "runbookd".into(),
                        },
                    },
                    now,
                )
            })
            .collect();
        if store
            .fire_cron_ticks(playbook, expr, mark, new_mark, &runs)
            .await?
        {
            current = new_mark;
            for run in &runs {
                tracing::info!(playbook, cron = expr, tick = %run.event["params"]["scheduled_for"].as_str().unwrap_or(""), run = %run.id, "cron fired");
            }
            if !runs.is_empty() {
                dispatcher.wake_claimer();
            }
        }
    }
    Ok(tz.next(schedule, current.max(now)))
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
