//! [`GuestStats`]: what the node agent reports per pod, and the counters behind it.
//!
//! CPU time is "busy time": the wall time spent inside `poll` of a guest's future. A guest
//! runs synchronously inside `poll` (wasmtime executes it on a fiber) and returns `Pending`
//! whenever it waits on the host, so busy time is time spent computing in the guest and in
//! the host calls it makes, not time spent waiting — at the cost of two clock reads per poll
//! instead of a syscall for thread CPU time.

use crate::limits::MemoryBudget;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Resource use of one guest (a pod's container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestStats {
    /// Time spent running the guest.
    pub cpu_time: Duration,
    /// Linear memory currently held by its live instances.
    pub memory_bytes: u64,
    /// HTTP requests received (HTTP guests).
    pub requests_total: u64,
    /// HTTP requests being handled now.
    pub inflight: u64,
    /// Requests failed because they would have exceeded the memory limit.
    pub requests_rejected_memory: u64,
    /// Requests that hit the request timeout.
    pub requests_timed_out: u64,
}

/// Live counters of one guest.
#[derive(Debug)]
pub(crate) struct Counters {
    pub cpu_nanos: AtomicU64,
    pub requests_total: AtomicU64,
    pub inflight: AtomicU64,
    pub rejected_memory: AtomicU64,
    pub timed_out: AtomicU64,
    pub budget: Arc<MemoryBudget>,
}

impl Counters {
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self {
            cpu_nanos: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            rejected_memory: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            budget,
        }
    }

    pub fn snapshot(&self) -> GuestStats {
        GuestStats {
            cpu_time: Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed)),
            memory_bytes: self.budget.used(),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Relaxed),
            requests_rejected_memory: self.rejected_memory.load(Ordering::Relaxed),
            requests_timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }

    /// Runs `fut`, adding the time spent in its polls to the CPU counter.
    pub async fn metered<F: Future>(self: &Arc<Self>, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let start = Instant::now();
            let out = fut.as_mut().poll(cx);
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
            out
        })
        .await
    }
}

/// Decrements `inflight` when a request ends, however it ends.
#[derive(Debug)]
pub(crate) struct InflightGuard(pub Arc<Counters>);

impl InflightGuard {
    pub fn start(counters: &Arc<Counters>) -> Self {
        counters.requests_total.fetch_add(1, Ordering::Relaxed);
        counters.inflight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counters))
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metered_counts_busy_time_not_waiting() {
        let c = Arc::new(Counters::new(Arc::new(MemoryBudget::new(None))));
        c.metered(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await;
        let idle = c.snapshot().cpu_time;
        assert!(idle < Duration::from_millis(20), "sleeping is not busy: {idle:?}");
        c.metered(async { std::thread::sleep(Duration::from_millis(30)) }).await;
        assert!(c.snapshot().cpu_time >= Duration::from_millis(30));
    }

    #[test]
    fn inflight_guard_counts() {
        let c = Arc::new(Counters::new(Arc::new(MemoryBudget::new(None))));
        let g = InflightGuard::start(&c);
        assert_eq!((c.snapshot().inflight, c.snapshot().requests_total), (1, 1));
        drop(g);
        assert_eq!((c.snapshot().inflight, c.snapshot().requests_total), (0, 1));
    }
}
