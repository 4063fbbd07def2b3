//! Time zones for schedules: a fixed offset or an IANA zone (configuration's
//! `[cron] timezone`, read by the cron trigger).

use chrono::{DateTime, FixedOffset, TimeZone};

/// The zone cron schedules are read in: a fixed offset (UTC included) or an IANA zone,
/// whose daylight-saving changes the schedule follows (`0 9 * * *` in `Europe/Berlin` is
/// 09:00 local all year).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `UTC`/`Z`, `+02:00`/`-05:30`, or an IANA name.
    pub fn parse(text: &str) -> Option<Zone> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return FixedOffset::east_opt(0).map(Zone::Fixed);
        }
        if let Some((sign, rest)) = match t.as_bytes().first() {
            Some(b'+') => Some((1, &t[1..])),
            Some(b'-') => Some((-1, &t[1..])),
            _ => None,
        } {
            let (h, m) = rest.split_once(':')?;
            let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
            return FixedOffset::east_opt(sign * secs).map(Zone::Fixed);
        }
        t.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
    }

    /// Ticks of `schedule` after `after_ms` up to `until_ms` (unix ms), at most `limit`.
    pub fn ticks(
        &self,
        schedule: &::cron::Schedule,
        after_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Vec<i64> {
        fn ticks_in<Z: TimeZone>(
            schedule: &::cron::Schedule,
            zone: &Z,
            after_ms: i64,
            until_ms: i64,
            limit: usize,
        ) -> Vec<i64> {
            let after = DateTime::from_timestamp_millis(after_ms)
                .unwrap_or_default()
                .with_timezone(zone);
            schedule
                .after(&after)
                .take(limit)
                .map(|t| t.timestamp_millis())
                .take_while(|t| *t <= until_ms)
                .collect()
        }
        match self {
            Zone::Fixed(z) => ticks_in(schedule, z, after_ms, until_ms, limit),
            Zone::Named(z) => ticks_in(schedule, z, after_ms, until_ms, limit),
        }
    }

    /// The first tick after `after_ms`.
    pub fn next(&self, schedule: &::cron::Schedule, after_ms: i64) -> Option<i64> {
        self.ticks(schedule, after_ms, i64::MAX, 1).first().copied()
    }

    /// `ms` as RFC 3339 in this zone (what `event.params.scheduled_for` shows).
    pub fn format(&self, ms: i64) -> String {
        let t = DateTime::from_timestamp_millis(ms).unwrap_or_default();
        match self {
            Zone::Fixed(z) => t.with_timezone(z).to_rfc3339(),
            Zone::Named(z) => t.with_timezone(z).to_rfc3339(),
        }
    }
}
