//! Time as runbookd sees it. The daemon runs on the real clock; simulations (`runbookd test`,
//! `runbookd simulate`) run on a virtual one that only moves when told to, so "payments
//! failing for more than 30 minutes" takes microseconds to test. Everything that reads the
//! time for a decision — `now()`, `sleep`, budgets, incident ages, breaker half-open,
//! escalation timers, store timestamps — asks a [`Clock`].

pub mod zone;

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc, Mutex,
};

/// Called after a virtual clock moved (a simulated app reacts to time passing).
type Observer = Arc<dyn Fn() + Send + Sync>;

/// A virtual clock's time and who watches it move.
#[derive(Default)]
pub struct VirtualTime {
    ms: AtomicI64,
    observers: Mutex<Vec<Observer>>,
}

impl std::fmt::Debug for VirtualTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualTime")
            .field("ms", &self.ms.load(Ordering::SeqCst))
            .finish()
    }
}

/// Real time, or a virtual clock shared by everything in one simulated world.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    Real,
    /// Milliseconds since the Unix epoch, moved only by [`Clock::advance`].
    Virtual(Arc<VirtualTime>),
}

impl Clock {
    /// A virtual clock reading `start_ms`.
    pub fn virtual_at(start_ms: i64) -> Clock {
        Clock::Virtual(Arc::new(VirtualTime {
            ms: AtomicI64::new(start_ms),
            observers: Mutex::default(),
        }))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Real => chrono::Utc::now().timestamp_millis(),
            Clock::Virtual(t) => t.ms.load(Ordering::SeqCst),
        }
    }

    /// Calls `f` every time this virtual clock moves (after it moved). The real clock moves
    /// on its own and calls nobody. `f` must not move the clock itself.
    pub fn on_advance(&self, f: impl Fn() + Send + Sync + 'static) {
        if let Clock::Virtual(t) = self {
            t.observers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::new(f));
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

    /// Waits `d`: real time on the real clock; on a virtual one, time moves at once.
    pub async fn sleep(&self, d: std::time::Duration) {
        match self {
            Clock::Real => tokio::time::sleep(d).await,
            Clock::Virtual(_) => self.advance(d.as_millis() as i64),
        }
    }

    /// Moves a virtual clock forward, then tells its observers; the real clock cannot be
    /// moved (no-op).
    pub fn advance(&self, ms: i64) {
        if let Clock::Virtual(t) = self {
            t.ms.fetch_add(ms.max(0), Ordering::SeqCst);
            let observers = t
                .observers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for o in observers {
                o();
            }
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

    #[test]
    fn observers_see_every_move_of_a_virtual_clock() {
        let c = Clock::virtual_at(0);
        let seen = Arc::new(AtomicI64::new(0));
        let (watch, s) = (c.clone(), seen.clone());
        c.on_advance(move || s.store(watch.now_ms(), Ordering::SeqCst));
        c.advance(250);
        assert_eq!(seen.load(Ordering::SeqCst), 250);
        futures_util::FutureExt::now_or_never(c.sleep(std::time::Duration::from_secs(1)))
            .expect("a virtual sleep never waits");
        assert_eq!(seen.load(Ordering::SeqCst), 1_250, "sleeping moves it too");
    }
}
