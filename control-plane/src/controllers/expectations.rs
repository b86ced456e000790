//! Controller expectations, as in client-go: after a ReplicaSet asks for N creations or
//! deletions it waits until the cache has observed them before counting pods again, so a
//! lagging cache never makes it create (or delete) twice. Expectations expire after
//! [`TTL`], in case an observation is ever missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::apiserver::error::ApiError;

/// How long an unmet expectation holds back a controller.
pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Pending {
    adds: i64,
    dels: i64,
    since: Instant,
}

/// Pending creations/deletions per controller key.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// True when nothing is pending for `key` (or what is pending is older than [`TTL`]).
    pub fn satisfied(&self, key: &str) -> bool {
        self.with(|m| m.get(key).is_none_or(|p| (p.adds <= 0 && p.dels <= 0) || p.since.elapsed() > TTL))
    }

    /// Records that `adds` creations and `dels` deletions were just requested.
    pub fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.with(|m| m.insert(key.to_string(), Pending { adds, dels, since: Instant::now() }));
    }

    /// A creation was observed (or failed and will never be).
    pub fn created(&self, key: &str) {
        self.with(|m| m.get_mut(key).map(|p| p.adds -= 1));
    }

    /// A deletion was observed (or failed and will never be).
    pub fn deleted(&self, key: &str) {
        self.with(|m| m.get_mut(key).map(|p| p.dels -= 1));
    }

    /// Accounts for one answered delete request of `key`'s: a delete that failed will never be
    /// observed, so its expectation is settled now. `Ok(true)` when this request deleted the
    /// pod, `Ok(false)` when it was already gone (not an error), the error otherwise.
    pub fn settle_delete<T>(&self, key: &str, result: Result<T, ApiError>) -> Result<bool, ApiError> {
        match result {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => {
                self.deleted(key);
                Ok(false)
            }
            Err(e) => {
                self.deleted(key);
                Err(e)
            }
        }
    }

    /// Forgets `key` (its controller is gone).
    pub fn forget(&self, key: &str) {
        self.with(|m| m.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_request_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("a"));
        e.expect("a", 2, 1);
        assert!(!e.satisfied("a"));
        e.created("a");
        e.deleted("a");
        assert!(!e.satisfied("a"));
        e.created("a");
        assert!(e.satisfied("a"));
        e.created("b");
        assert!(e.satisfied("b"), "observations without expectations are harmless");
        e.expect("a", 1, 0);
        e.forget("a");
        assert!(e.satisfied("a"));
    }
}
