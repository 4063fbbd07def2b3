//! Time as runbookd sees it. The daemon runs on the real clock; simulations (`runbookd test`,
//! `runbookd simulate`) run on a virtual one that only moves when told to, so "payments
//! failing for more than 30 minutes" takes microseconds to test. Everything that reads the
//! time for a decision — `now()`, `sleep`, budgets, incident ages, breaker half-open,
//! escalation timers, store timestamps — asks a [`Clock`].

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

/// Real time, or a virtual clock shared by everything in one simulated world.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    Real,
    /// Milliseconds since the Unix epoch, moved only by [`Clock::advance`].
    Virtual(Arc<AtomicI64>),
}

impl Clock {
    /// A virtual clock reading `start_ms`.
    pub fn virtual_at(start_ms: i64) -> Clock {
        Clock::Virtual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Real => chrono::Utc::now().timestamp_millis(),
            Clock::Virtual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Seconds since the Unix epoch, as a float (the app's `time.time()`).
    pub fn now_seconds(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }

    /// True for a simulation's clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }

    /// Moves a virtual clock forward; the real clock cannot be moved (no-op).
    pub fn advance(&self, ms: i64) {
        if let Clock::Virtual(t) = self {
            t.fetch_add(ms.max(0), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_clock_moves_only_when_advanced_and_clones_share_it() {
        let c = Clock::virtual_at(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        shared.advance(1_800_000);
        assert_eq!(c.now_ms(), 1_801_000);
        c.advance(-5);
        assert_eq!(c.now_ms(), 1_801_000, "time never goes back");
        assert!(c.is_virtual() && !Clock::Real.is_virtual());
    }
}
