//! A closed-loop load generator: `concurrency` workers run `total` operations as fast as they
//! complete, each timing its own operations into a latency histogram.
//!
//! Closed-loop (a worker waits for its reply before sending the next request) is how kubectl,
//! controllers and most clients behave, so the figures mean "throughput at N in-flight requests".

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// Outcome of one load run.
#[derive(Debug)]
pub struct LoadResult {
    /// Operations attempted.
    pub ops: usize,
    /// Operations that returned an error.
    pub errors: usize,
    /// The first error, to explain a non-zero `errors`.
    pub first_error: Option<String>,
    /// Wall time from the first request to the last reply.
    pub elapsed: Duration,
    /// Latency of successful operations, in microseconds.
    pub latency: Histogram<u64>,
}

impl LoadResult {
    /// Successful operations per second.
    pub fn per_second(&self) -> f64 {
        let ok = self.ops.saturating_sub(self.errors) as f64;
        ok / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Latency percentile `q` (0–100) in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q / 100.0) as f64 / 1000.0
    }
}

/// Runs `op(i)` for `i` in `0..total` on `concurrency` workers and measures it.
pub async fn run<F, Fut>(total: usize, concurrency: usize, op: F) -> Result<LoadResult>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut latency = new_histogram()?;
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t0 = Instant::now();
                match op(i).await {
                    Ok(()) => {
                        let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latency.saturating_record(micros.max(1));
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            anyhow::Ok((latency, errors, first_error))
        });
    }
    let mut result =
        LoadResult { ops: total, errors: 0, first_error: None, elapsed: Duration::ZERO, latency: new_histogram()? };
    while let Some(joined) = workers.join_next().await {
        let (latency, errors, first_error) = joined.context("load worker panicked")??;
        result.latency.add(&latency).context("merging histograms")?;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

/// A histogram of 1 µs .. 10 min with 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating histogram")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_ops_and_errors() {
        let result = run(100, 8, |i| async move {
            if i % 10 == 0 {
                anyhow::bail!("op {i} failed");
            }
            Ok(())
        })
        .await
        .expect("load runs");
        assert_eq!(result.ops, 100);
        assert_eq!(result.errors, 10);
        assert!(result.first_error.as_ref().is_some_and(|e| e.contains("failed")));
        assert_eq!(result.latency.len(), 90);
        assert!(result.per_second() > 0.0);
    }
}
