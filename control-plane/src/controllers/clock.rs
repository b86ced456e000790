//! The controllers' notion of "now": the wall clock in a running server, a clock the test moves
//! by hand in unit tests — so deadlines (progressDeadlineSeconds, activeDeadlineSeconds,
//! CronJob schedules, node lease grace, toleration seconds, minReadySeconds) are tested without
//! sleeping. Only decisions read this clock; how long a worker waits before looking again
//! (`WorkQueue::add_after`) stays on real time, since tests call `reconcile` directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// A source of the current time (cheap to clone; clones of a fake clock move together).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    Real,
    /// A clock that only moves when told to.
    Fake(Arc<Mutex<Timestamp>>),
}

impl Clock {
    /// A fake clock starting at `start`.
    pub fn fake(start: Timestamp) -> Clock {
        Clock::Fake(Arc::new(Mutex::new(start)))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Real => Timestamp::now(),
            Clock::Fake(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a fake clock forward by `by` (a real clock ignores this).
    pub fn advance(&self, by: Duration) {
        if let Clock::Fake(t) = self {
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            // A jump past the representable range saturates rather than panicking a test.
            *t = t.checked_add(by).unwrap_or(Timestamp::MAX);
        }
    }

    /// Sets a fake clock to `to` (a real clock ignores this).
    pub fn set(&self, to: Timestamp) {
        if let Clock::Fake(t) = self {
            *t.lock().unwrap_or_else(|p| p.into_inner()) = to;
        }
    }
}

/// The time since `earlier` on `clock`, zero if `earlier` is in the future.
pub fn since(clock: &Clock, earlier: Timestamp) -> Duration {
    Duration::try_from(clock.now().duration_since(earlier)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told_and_clones_share_it() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let clock = Clock::fake(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + jiff::SignedDuration::from_secs(90));
        assert_eq!(since(&clock, start), Duration::from_secs(90));
        assert_eq!(since(&clock, start + jiff::SignedDuration::from_secs(600)), Duration::ZERO);
        clock.set(start);
        assert_eq!(other.now(), start);
    }
}
