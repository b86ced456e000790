//! A keyed, de-duplicating work queue with per-key exponential back-off — the semantics of
//! client-go's rate-limited workqueue, which every controller here (and the scheduler) uses:
//!
//! * a key added many times before a worker takes it is processed once (level-triggered
//!   reconcilers only need to know *that* something changed);
//! * a key is never handed to two workers at once: adding a key that is being processed marks
//!   it dirty, and [`WorkQueue::done`] puts it back for another pass;
//! * [`WorkQueue::retry`] re-adds a key after a back-off that doubles per failure, and
//!   [`WorkQueue::forget`] resets it after a success.
//!
//! The bookkeeping is a plain struct ([`QueueState`]) driven with explicit instants, so it is
//! unit-tested without timers; [`WorkQueue`] is the thin async shell around it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Back-off of the first retry of a key.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// Back-off never grows past this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The queue's bookkeeping, free of I/O and timers.
#[derive(Debug, Default)]
pub struct QueueState {
    /// Keys ready to be handed out, in order.
    queue: VecDeque<String>,
    /// Keys waiting in `queue` or to be re-queued when their processing ends.
    dirty: HashSet<String>,
    /// Keys a worker holds right now.
    processing: HashSet<String>,
    /// Keys to add later, by due time (a key appears at most once, at its earliest time).
    delayed: BTreeMap<(Instant, u64), String>,
    delayed_at: HashMap<String, (Instant, u64)>,
    seq: u64,
    /// Consecutive failures per key, for the back-off.
    failures: HashMap<String, u32>,
}

impl QueueState {
    /// Marks `key` as needing work. Returns true when a worker may now take it.
    pub fn add(&mut self, key: &str) -> bool {
        if !self.dirty.insert(key.to_string()) {
            return false;
        }
        if self.processing.contains(key) {
            return false;
        }
        self.queue.push_back(key.to_string());
        true
    }

    /// Adds `key` once `at` has passed (the earliest of several requests wins).
    pub fn add_at(&mut self, key: &str, at: Instant) {
        if let Some(&(existing, seq)) = self.delayed_at.get(key) {
            if existing <= at {
                return;
            }
            self.delayed.remove(&(existing, seq));
        }
        self.seq += 1;
        self.delayed.insert((at, self.seq), key.to_string());
        self.delayed_at.insert(key.to_string(), (at, self.seq));
    }

    /// The back-off for the next retry of `key`, counting this failure.
    pub fn next_backoff(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        let delay = BASE_DELAY.saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX));
        *n = n.saturating_add(1);
        delay.min(MAX_DELAY)
    }

    /// Forgets the failures of `key` (after a successful pass).
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// How many times `key` failed in a row.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Moves delayed keys due at `now` into the queue; returns the next due time, if any.
    pub fn promote(&mut self, now: Instant) -> Option<Instant> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let key = entry.remove();
            self.delayed_at.remove(&key);
            self.add(&key);
        }
        None
    }

    /// Hands out the next ready key and marks it processing.
    pub fn take(&mut self) -> Option<String> {
        let key = self.queue.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// Ends processing of `key`; re-queues it if it was added meanwhile. Returns true when it
    /// was re-queued.
    pub fn done(&mut self, key: &str) -> bool {
        self.processing.remove(key);
        if self.dirty.contains(key) {
            self.queue.push_back(key.to_string());
            return true;
        }
        false
    }

    /// Keys ready or in flight (not the delayed ones).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The shared, async work queue. Cloning gives another handle to the same queue.
#[derive(Debug, Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<QueueState>,
    notify: Notify,
}

impl WorkQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        // A worker that panicked while holding the lock leaves consistent-enough state: keep going.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `key` as needing work.
    pub fn add(&self, key: &str) {
        if self.state().add(key) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        self.state().add_at(key, Instant::now() + delay);
        // A waiting worker must recompute its wake-up time.
        self.inner.notify.notify_waiters();
    }

    /// Re-adds `key` after its exponential back-off (a failed pass).
    pub fn retry(&self, key: &str) {
        let delay = self.state().next_backoff(key);
        self.add_after(key, delay);
    }

    /// Resets the back-off of `key` (a successful pass).
    pub fn forget(&self, key: &str) {
        self.state().forget(key);
    }

    /// Ends processing of `key` (call after every [`WorkQueue::next`] that returned it).
    pub fn done(&self, key: &str) {
        if self.state().done(key) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Waits for the next key; `None` once `cancel` fires.
    pub async fn next(&self, cancel: &CancellationToken) -> Option<String> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so an add between the look and the wait is not lost.
            notified.as_mut().enable();
            let due = {
                let mut state = self.state();
                let due = state.promote(Instant::now());
                if let Some(key) = state.take() {
                    return Some(key);
                }
                due
            };
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = &mut notified => {}
                _ = sleep => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_collapse_until_taken() {
        let mut q = QueueState::default();
        assert!(q.add("a"));
        assert!(!q.add("a"));
        assert!(q.add("b"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.take().as_deref(), Some("a"));
        assert_eq!(q.take().as_deref(), Some("b"));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_key_in_flight_is_not_handed_out_twice() {
        let mut q = QueueState::default();
        q.add("a");
        assert_eq!(q.take().as_deref(), Some("a"));
        // Added while a worker holds it: not ready again until done.
        assert!(!q.add("a"));
        assert_eq!(q.take(), None);
        assert!(q.done("a"), "the dirty key is re-queued");
        assert_eq!(q.take().as_deref(), Some("a"));
        assert!(!q.done("a"), "not added meanwhile: nothing re-queued");
        assert!(q.is_empty());
    }

    #[test]
    fn delayed_keys_wait_for_their_time_and_the_earliest_wins() {
        let mut q = QueueState::default();
        let t0 = Instant::now();
        q.add_at("a", t0 + Duration::from_secs(10));
        q.add_at("a", t0 + Duration::from_secs(5));
        q.add_at("a", t0 + Duration::from_secs(20));
        assert_eq!(q.promote(t0), Some(t0 + Duration::from_secs(5)));
        assert_eq!(q.take(), None);
        assert_eq!(q.promote(t0 + Duration::from_secs(5)), None);
        assert_eq!(q.take().as_deref(), Some("a"));
    }

    #[test]
    fn backoff_doubles_per_failure_caps_and_resets() {
        let mut q = QueueState::default();
        assert_eq!(q.next_backoff("a"), BASE_DELAY);
        assert_eq!(q.next_backoff("a"), BASE_DELAY * 2);
        assert_eq!(q.next_backoff("a"), BASE_DELAY * 4);
        assert_eq!(q.failures("a"), 3);
        assert_eq!(q.next_backoff("b"), BASE_DELAY, "per key");
        for _ in 0..64 {
            q.next_backoff("a");
        }
        assert_eq!(q.next_backoff("a"), MAX_DELAY);
        q.forget("a");
        assert_eq!(q.next_backoff("a"), BASE_DELAY);
    }

    #[tokio::test]
    async fn workers_wake_on_add_and_stop_on_cancel() {
        let q = WorkQueue::new();
        let cancel = CancellationToken::new();
        let (q2, c2) = (q.clone(), cancel.clone());
        let worker = tokio::spawn(async move { q2.next(&c2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.add("x");
        let got = tokio::time::timeout(Duration::from_secs(5), worker).await.expect("woken").expect("joined");
        assert_eq!(got.as_deref(), Some("x"));
        q.done("x");

        q.retry("y");
        let got = tokio::time::timeout(Duration::from_secs(5), q.next(&cancel)).await.expect("delayed key arrives");
        assert_eq!(got.as_deref(), Some("y"));

        cancel.cancel();
        assert_eq!(q.next(&cancel).await, None);
    }
}
