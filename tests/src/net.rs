//! Small networking and waiting helpers shared by the harness.
//!
//! Every wait in the harness goes through [`wait_until`], so no test can hang forever on a
//! process that never becomes ready.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Picks a free loopback port by binding port 0 and releasing it.
///
/// Another process could grab the port in between; that race is accepted in tests because the
/// kernel hands out ephemeral ports round-robin, so an immediate reuse is very unlikely.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
    Ok(addr.port())
}

/// An error that makes [`wait_until`] give up at once instead of retrying (e.g. the process
/// being waited for has exited).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Polls `check` every `every` until it returns `Ok(Some(value))`, failing after `timeout`.
///
/// `Ok(None)` and `Err(_)` both mean "not yet"; the last error is reported on timeout so a
/// failure says why the condition never held. An error that is a [`Fatal`] ends the wait at
/// once.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) if error.downcast_ref::<Fatal>().is_some() => return Err(error),
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_error {
                Some(error) => bail!("timed out after {timeout:?} waiting for {what}: {error:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `future` with a deadline, naming `what` in the error.
pub async fn with_timeout<T>(what: &str, timeout: Duration, future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, future).await.with_context(|| format!("timed out after {timeout:?}: {what}"))?
}

/// The last `max_lines` lines of a log file, for error messages; empty if unreadable.
pub fn log_tail(path: &std::path::Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().expect("a free port"), 0);
    }

    #[tokio::test]
    async fn wait_until_returns_value_and_times_out() {
        let mut n = 0;
        let got = wait_until("n reaches 3", Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            let v = n;
            async move { Ok((v >= 3).then_some(v)) }
        })
        .await
        .expect("condition holds");
        assert_eq!(got, 3);

        let err = wait_until::<(), _, _>("never", Duration::from_millis(20), Duration::from_millis(5), || async {
            anyhow::bail!("still broken")
        })
        .await
        .expect_err("must time out");
        assert!(format!("{err:#}").contains("still broken"), "{err:#}");

        let started = std::time::Instant::now();
        let err = wait_until::<(), _, _>("fatal", Duration::from_secs(30), Duration::from_millis(5), || async {
            Err(Fatal("gone".into()).into())
        })
        .await
        .expect_err("must fail");
        assert_eq!(err.to_string(), "gone");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
