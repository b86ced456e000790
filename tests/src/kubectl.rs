//! Driving the real `kubectl` against a [`Skiff`].
//!
//! kubectl runs with `KUBECONFIG` pointing at skiff's kubeconfig, a private `HOME` (so the
//! user's `~/.kube` is neither read nor polluted by the discovery cache), a
//! `--request-timeout`, and an overall deadline. `$KUBECTL` overrides the binary.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::skiff::Skiff;

/// Overall deadline for one kubectl invocation.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one kubectl run produced.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The command line, for messages.
    pub args: Vec<String>,
    /// Whether kubectl exited with status 0.
    pub success: bool,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl KubectlOutput {
    /// Stdout if kubectl succeeded, else an error carrying its stderr.
    pub fn ok(self) -> Result<String> {
        if !self.success {
            bail!("kubectl {} failed:\nstderr: {}\nstdout: {}", self.args.join(" "), self.stderr, self.stdout);
        }
        Ok(self.stdout)
    }

    /// Stderr if kubectl failed, else an error: for tests that expect a rejection.
    pub fn err(self) -> Result<String> {
        if self.success {
            bail!("kubectl {} succeeded but was expected to fail; stdout: {}", self.args.join(" "), self.stdout);
        }
        Ok(self.stderr)
    }

    /// Stdout parsed as JSON (for `-o json`), failing if kubectl failed.
    pub fn json(self) -> Result<serde_json::Value> {
        let args = self.args.join(" ");
        let stdout = self.ok()?;
        serde_json::from_str(&stdout).with_context(|| format!("kubectl {args}: stdout is not JSON"))
    }
}

impl Skiff {
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let bin = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
        let mut command = Command::new(bin);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .arg("--request-timeout=30s")
            .args(args)
            .kill_on_drop(true);
        command
    }

    /// Runs `kubectl ARGS` and collects its output (a failing kubectl is not an `Err`).
    pub async fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput> {
        self.kubectl_stdin(args, None).await
    }

    /// `kubectl apply -f -` of `yaml`; an error carries kubectl's stderr.
    pub async fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).await?.ok()?;
        Ok(())
    }

    /// Runs `kubectl ARGS` with `input` on stdin (e.g. `apply -f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<KubectlOutput> {
        let mut command = self.kubectl_command(args);
        command
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("starting kubectl (is it installed?)")?;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().context("kubectl stdin")?;
            stdin.write_all(input.as_bytes()).await.context("writing kubectl stdin")?;
            // Dropping stdin closes it so kubectl sees EOF.
        }
        let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {} timed out", args.join(" ")))?
            .context("waiting for kubectl")?;
        Ok(KubectlOutput {
            args: args.iter().map(|a| a.to_string()).collect(),
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Starts a long-running kubectl (e.g. `get cm -w`) whose stdout is read line by line.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Result<KubectlStream> {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl")?;
        let stdout = child.stdout.take().context("kubectl stdout")?;
        Ok(KubectlStream { lines: BufReader::new(stdout).lines(), seen: Vec::new(), _child: child })
    }
}

/// A running kubectl whose output is consumed as lines; killed on drop.
#[derive(Debug)]
pub struct KubectlStream {
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    _child: Child,
}

impl KubectlStream {
    /// Reads lines until one satisfies `matches`, failing after `timeout` or at end of output.
    pub async fn wait_for_line(&mut self, timeout: Duration, matches: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            match next {
                Err(_) => bail!("no matching line within {timeout:?}; lines so far:\n{}", self.seen.join("\n")),
                Ok(Err(error)) => return Err(error).context("reading kubectl output"),
                Ok(Ok(None)) => bail!("kubectl output ended; lines so far:\n{}", self.seen.join("\n")),
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Ok(line);
                    }
                }
            }
        }
    }
}
