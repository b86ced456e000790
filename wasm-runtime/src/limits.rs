//! Memory limits: a [`MemoryBudget`] shared by all instances of one guest (one pod), and a
//! per-store [`GuestLimiter`] that draws from it.
//!
//! Kubernetes' `limits.memory` caps a container; for a `wasi:http` guest the "container" is
//! every live per-request instance together, so each store reserves its linear-memory growth
//! from the shared atomic budget and gives it back when the store drops. A denied growth makes
//! `memory.grow` return -1 (the guest's allocator then fails, usually with a trap); the
//! limiter remembers the denial so the caller can tell an out-of-memory trap from any other
//! (`OOMKilled` for a command, a counted 5xx for a request).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Table elements one table may grow to: far above what real programs use, low enough that a
/// hostile guest cannot exhaust host memory through tables.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Bytes of linear memory a guest may hold across all its live instances.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: Option<u64>,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (`None`: unlimited, only accounted).
    pub fn new(limit: Option<u64>) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// Bytes currently reserved by live instances.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if that keeps the total within the limit.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        let Some(limit) = self.limit else {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            return true;
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    /// Returns `bytes` reserved earlier.
    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The `wasmtime::ResourceLimiter` of one store: reserves from the guest's budget, releases
/// everything on drop, and records whether it ever refused to grow a memory.
#[derive(Debug)]
pub struct GuestLimiter {
    budget: Arc<MemoryBudget>,
    reserved: u64,
    last_growth: u64,
    denied: Arc<AtomicBool>,
}

impl GuestLimiter {
    /// A limiter drawing from `budget`.
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self { budget, reserved: 0, last_growth: 0, denied: Arc::new(AtomicBool::new(false)) }
    }

    /// A flag that turns true once a memory growth was refused; readable after the store moved.
    pub fn denied_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.denied)
    }

    fn deny(&self) -> bool {
        self.denied.store(true, Ordering::Relaxed);
        false
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(self.deny());
        }
        let growth = desired.saturating_sub(current) as u64;
        if !self.budget.try_reserve(growth) {
            return Ok(self.deny());
        }
        self.reserved += growth;
        self.last_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // We reserved for a growth the allocator then could not perform: give it back, and
        // count it as out-of-memory like a refusal.
        self.budget.release(self.last_growth);
        self.reserved -= self.last_growth;
        self.last_growth = 0;
        self.deny();
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn budget_is_shared_and_released_on_drop() {
        let budget = Arc::new(MemoryBudget::new(Some(100)));
        let mut a = GuestLimiter::new(Arc::clone(&budget));
        let mut b = GuestLimiter::new(Arc::clone(&budget));
        assert!(a.memory_growing(0, 60, None).expect("limiter"));
        assert!(!b.memory_growing(0, 60, None).expect("limiter"), "60 + 60 > 100");
        assert!(b.denied_flag().load(Ordering::Relaxed));
        assert!(!a.denied_flag().load(Ordering::Relaxed));
        assert!(b.memory_growing(0, 40, None).expect("limiter"));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn failed_growth_is_given_back_and_counts_as_denied() {
        let budget = Arc::new(MemoryBudget::new(None));
        let mut l = GuestLimiter::new(Arc::clone(&budget));
        assert!(l.memory_growing(10, 30, None).expect("limiter"));
        l.memory_grow_failed(wasmtime::format_err!("mmap failed")).expect("limiter");
        assert_eq!(budget.used(), 0);
        assert!(l.denied_flag().load(Ordering::Relaxed));
    }

    #[test]
    fn growth_past_the_memory_maximum_is_denied() {
        let mut l = GuestLimiter::new(Arc::new(MemoryBudget::new(None)));
        assert!(!l.memory_growing(0, 11, Some(10)).expect("limiter"));
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).expect("limiter"));
    }
}
