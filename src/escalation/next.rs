//! What the dashboard says comes next for an incident: the next level and, when only time
//! stands in the way, when — with the evaluator's own conditions.

use super::Table;
use crate::store::{Incident, IncidentStatus};

/// The next level an incident would reach: its name and, when only time stands between
/// the incident and it (the facts, level and status as they are now), when. Levels below
/// the current one never fire (levels only go up), so the first higher level not yet fired
/// is the one; the time is the earliest moment in the next 24 hours its condition holds,
/// to the second, found with the evaluator's own condition.
pub fn next_level(
    table: &Table,
    incident: &Incident,
    fires: &[crate::store::Fire],
    now: i64,
) -> Option<(String, Option<i64>)> {
    if incident.status == IncidentStatus::Resolved {
        return None;
    }
    let current = incident.level.as_deref().and_then(|l| table.rank(l));
    let (_, level) = table.levels.iter().enumerate().find(|(rank, l)| {
        current.is_none_or(|c| *rank > c) && !fires.iter().any(|f| f.level == l.name)
    })?;
    let holds_at = |at: i64| {
        level
            .condition
            .holds(
                (at - incident.opened_at) as f64 / 1000.0,
                &incident.facts,
                incident.level.as_deref().unwrap_or(""),
                incident.status.as_str(),
                &incident.labels,
            )
            .unwrap_or(false)
    };
    const MINUTE: i64 = 60_000;
    let horizon = now + 24 * 60 * MINUTE;
    let mut at = now;
    if holds_at(at) {
        return Some((level.name.clone(), Some(now)));
    }
    while at < horizon {
        let next = at + MINUTE;
        if holds_at(next) {
            // Bisect the minute to the second.
            let (mut lo, mut hi) = (at, next);
            while hi - lo > 1000 {
                let mid = lo + (hi - lo) / 2;
                if holds_at(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            return Some((level.name.clone(), Some(hi)));
        }
        at = next;
    }
    Some((level.name.clone(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::DEFAULT_TABLE;

    #[test]
    fn the_next_level_is_the_first_higher_one_not_fired_and_when_time_alone_brings_it() {
        let t = Table::parse(DEFAULT_TABLE, &[]).expect("default table");
        let opened = 1_000_000_000_000;
        let incident = Incident {
            id: "i".into(),
            key: "k".into(),
            source: "alert:PaymentProcessorDown".into(),
            title: "t".into(),
            labels: serde_json::json!({"alertname": "PaymentProcessorDown"}),
            status: IncidentStatus::Open,
            level: Some("L1".into()),
            facts: serde_json::json!({"breaker_open": true}),
            opened_at: opened,
            acked_at: None,
            acked_by: None,
            resolved_at: None,
            resolved_by: None,
        };
        let fired = |level: &str| crate::store::Fire {
            level: level.into(),
            fired_at: opened,
            last_sent: opened,
            sends: 1,
        };
        // At L1 ten minutes in: L2 (`age > 1800`) 20 minutes later, to the second.
        let now = opened + 600_000;
        let (level, at) = next_level(&t, &incident, &[fired("L1")], now).expect("next");
        assert_eq!(level, "L2");
        let at = at.expect("time alone brings it");
        assert!((at - (opened + 1_800_000)).abs() <= 1000, "{}", at - opened);
        // L2 fired: L3 waits for a fact, not for time.
        let mut at_l2 = incident.clone();
        at_l2.level = Some("L2".into());
        assert_eq!(
            next_level(&t, &at_l2, &[fired("L1"), fired("L2")], now),
            Some(("L3".into(), None))
        );
        // A condition that holds now is due now; a resolved incident has no next level.
        let mut fresh = incident.clone();
        fresh.level = None;
        assert_eq!(
            next_level(&t, &fresh, &[], now),
            Some(("L1".into(), Some(now)))
        );
        fresh.status = IncidentStatus::Resolved;
        assert_eq!(next_level(&t, &fresh, &[], now), None);
    }
}
