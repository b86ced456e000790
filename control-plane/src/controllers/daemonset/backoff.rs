//! The back-off between deleting failed daemon pods on one node (client-go's
//! `flowcontrol.Backoff` as the Go controller uses it: 1 s doubling to 15 min, reset after a
//! quiet period), so a node whose agent keeps failing the pod is not hammered. Keyed by
//! DaemonSet and node; read on the controller's clock so tests move it by hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(1);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(15 * 60);

/// Per-key delays (cheap to clone; clones share the table).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    inner: Arc<Mutex<HashMap<String, (Duration, Timestamp)>>>,
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

impl Backoff {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, (Duration, Timestamp)>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `Some(remaining)` while `key` is still backing off at `now`.
    pub fn in_backoff(&self, key: &str, now: Timestamp) -> Option<Duration> {
        self.with(|m| {
            let (delay, at) = *m.get(key)?;
            let waited = elapsed(now, at);
            (waited < delay).then(|| delay - waited)
        })
    }

    /// Records an action on `key` at `now`: the next one waits twice as long (from
    /// [`INITIAL`], capped at [`MAX`]; after `2 * MAX` of quiet it starts over).
    pub fn next(&self, key: &str, now: Timestamp) {
        self.with(|m| {
            let delay = match m.get(key) {
                Some((d, at)) if elapsed(now, *at) <= 2 * MAX => (*d * 2).min(MAX),
                _ => INITIAL,
            };
            m.insert(key.to_string(), (delay, now));
        });
    }

    /// Forgets every key starting with `prefix` (a deleted DaemonSet).
    pub fn forget_prefix(&self, prefix: &str) {
        self.with(|m| m.retain(|k, _| !k.starts_with(prefix)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let b = Backoff::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert_eq!(b.in_backoff("k", t0), None);
        b.next("k", t0);
        assert_eq!(b.in_backoff("k", t0), Some(INITIAL));
        assert_eq!(b.in_backoff("k", at(1)), None);
        b.next("k", at(1));
        assert_eq!(b.in_backoff("k", at(2)), Some(Duration::from_secs(1)), "2 s delay, 1 s waited");
        for i in 0..20 {
            b.next("k", at(10 + i));
        }
        assert_eq!(b.in_backoff("k", at(29)), Some(MAX), "capped");
        b.next("k", at(29 + 2 * MAX.as_secs() as i64 + 1));
        assert_eq!(b.in_backoff("k", at(29 + 2 * MAX.as_secs() as i64 + 1)), Some(INITIAL), "reset after quiet");
        b.forget_prefix("k");
        assert_eq!(b.in_backoff("k", t0), None);
    }
}
