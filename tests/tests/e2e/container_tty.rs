//! Interactive terminals of OCI containers (issue 5): real `kubectl exec -it` driven under a
//! pseudo-terminal this test owns, against `skiff up --pod-network bridge --runtimes wasm,oci`
//! inside a network namespace the test creates (as `containers.rs`), with real runc.
//!
//! `kubectl exec -it POD -- sh`: the shell has a terminal (`tty` prints `/dev/pts/N`), starts
//! with the client's window size, follows a resize (`stty size`), echoes typed input, and
//! `exit 3` becomes kubectl's exit code. `kubectl attach POD` streams the container's output
//! live, and `kubectl attach -i` feeds a `stdin: true` container (terminals for `tty: true`
//! containers are not there yet). Runc containers, overlay mounts and pod namespaces
//! under the data dir are removed at the end, also on failure.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use skiff_oci_shim::runtime::console::{self, Console, ConsoleReader, ConsoleWriter};
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{NetNs, Skiff, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready};

/// How long one expected piece of terminal output may take.
const EXPECT: Duration = Duration::from_secs(20);

/// A kubectl whose stdin, stdout and stderr are a pseudo-terminal this test holds the master
/// of, as in a user's terminal window. Killed on drop.
struct Terminal {
    kubectl: tokio::process::Child,
    console: Console,
    output: ConsoleReader,
    input: ConsoleWriter,
    /// Everything the terminal showed so far.
    seen: String,
}

impl Terminal {
    /// Starts `kubectl ARGS` on a new `width`×`height` terminal.
    fn kubectl(skiff: &Skiff, args: &[&str], width: u16, height: u16) -> Result<Self> {
        let (master, slave) = console::open_pty()?;
        console::set_size(&master, width, height)?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
        let bin = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
        let kubectl = tokio::process::Command::new(bin)
            .env("KUBECONFIG", &skiff.kubeconfig)
            .env("HOME", skiff.home())
            .env("TERM", "xterm")
            .args(args)
            .stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(Stdio::from(slave))
            .kill_on_drop(true)
            .spawn()
            .context("starting kubectl")?;
        let console = Console::new(master)?;
        let (output, input) = console.split();
        Ok(Self { kubectl, console, output, input, seen: String::new() })
    }

    /// Types `text`.
    async fn send(&mut self, text: &str) -> Result<()> {
        self.input.write_all(text.as_bytes()).await.context("typing into the terminal")
    }

    /// Reads until the output since `from` contains `needle`; `from` becomes the end of it.
    async fn expect_after(&mut self, from: &mut usize, needle: &str, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !self.seen[*from..].contains(needle) {
            let n = match tokio::time::timeout_at(deadline, self.output.read(&mut buf)).await {
                Ok(read) => read.context("reading the terminal")?,
                Err(_) => bail!("{needle:?} did not show within {within:?}; the terminal showed {:?}", self.seen),
            };
            ensure!(n > 0, "the terminal closed before {needle:?} showed; it showed {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        *from = self.seen.len();
        Ok(())
    }

    async fn expect(&mut self, needle: &str) -> Result<()> {
        let mut from = self.seen.len();
        self.expect_after(&mut from, needle, EXPECT).await
    }

    /// Resizes the window: the terminal's size, and `SIGWINCH` to kubectl as a terminal
    /// emulator's kernel would send its foreground process (kubectl is not in the terminal's
    /// session here).
    fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.console.resize(width, height)?;
        let pid = self.kubectl.id().context("kubectl has exited")?;
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::WINCH)?;
        Ok(())
    }

    /// kubectl's exit code once it ended.
    async fn exit_code(&mut self) -> Result<Option<i32>> {
        // Keep draining the terminal so kubectl never blocks writing its last words.
        let mut rest = Vec::new();
        let drain = self.output.read_to_end(&mut rest);
        let status = tokio::time::timeout(EXPECT, async { tokio::join!(self.kubectl.wait(), drain).0 })
            .await
            .with_context(|| format!("kubectl did not exit; the terminal showed {:?}", self.seen))??;
        self.seen.push_str(&String::from_utf8_lossy(&rest));
        Ok(status.code())
    }
}

fn sleeper_pod(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo up; exec sleep 3600"]
"#
    )
}

async fn ready_pod(skiff: &Skiff, name: &str) -> Result<()> {
    wait_until(&format!("pod {name} to be Ready"), POD_TIMEOUT, POLL, || async {
        let p = get_json(skiff, &["pod", name]).await?;
        Ok(pod_is_ready(&p).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

/// `kubectl exec -it`: a terminal with the client's size, resizes, echo and the exit code.
async fn exec_it(skiff: &Skiff, pod: &str) -> Result<()> {
    let mut term = Terminal::kubectl(skiff, &["exec", "-it", pod, "--", "sh"], 100, 30)?;
    term.send("tty\n").await?;
    term.expect("/dev/pts/").await?;
    term.send("stty size\n").await?;
    term.expect("30 100").await?;
    // A resize travels kubectl → API server → node → runc → the container's terminal: ask
    // again until it arrived.
    term.resize(120, 40)?;
    let mut resized = false;
    for _ in 0..20 {
        let mut from = term.seen.len();
        term.send("stty size\n").await?;
        term.expect_after(&mut from, "\n", EXPECT).await?;
        if term.expect_after(&mut from, "40 120", Duration::from_millis(500)).await.is_ok() {
            resized = true;
            break;
        }
    }
    ensure!(resized, "stty size never showed the new size 40 120; the terminal showed {:?}", term.seen);
    // Typed input is echoed by the container's terminal, and stderr shares it.
    term.send("echo typed-$((40+2)) >&2\n").await?;
    term.expect("typed-42").await?;
    ensure!(term.seen.contains("echo typed-$((40+2))"), "typed input was not echoed: {:?}", term.seen);
    term.send("exit 3\n").await?;
    let code = term.exit_code().await?;
    ensure!(code == Some(3), "kubectl exec -it exited {code:?}, not 3; the terminal showed {:?}", term.seen);
    Ok(())
}

/// `kubectl attach`: output written after attaching arrives live, both streams.
async fn attach_streams(skiff: &Skiff, image: &str) -> Result<()> {
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "i=0; while true; do echo tick-$i; echo tock-$i >&2; i=$((i+1)); sleep 0.3; done"]
"#
    );
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&pod)).await?.ok()?;
    ready_pod(skiff, "ticker").await?;
    let mut attached = skiff.kubectl_spawn(&["attach", "ticker", "-c", "main"])?;
    let first = attached.wait_for_line(EXPECT, |l| l.starts_with("tick-")).await?;
    let n: u32 = first.trim_start_matches("tick-").trim().parse().context("tick number")?;
    let later = format!("tick-{}", n + 3);
    attached.wait_for_line(EXPECT, |l| l.trim() == later).await.context("attached output is not live")?;
    drop(attached);
    skiff.kubectl(&["delete", "pod", "ticker", "--timeout=60s"]).await?.ok()?;
    Ok(())
}

/// `kubectl attach -i` to a container with `stdin: true, stdinOnce: true`: what the client
/// sends reaches the process, and its stdin closes when that first client is done.
async fn attach_stdin(skiff: &Skiff, image: &str) -> Result<()> {
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  runtimeClassName: oci
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "read line; echo got:$line; cat; echo stdin-closed"]
"#
    );
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&pod)).await?.ok()?;
    ready_pod(skiff, "reader").await?;
    let out = skiff.kubectl_stdin(&["attach", "-i", "reader", "-c", "main"], Some("hello\nmore\n")).await?;
    ensure!(
        out.stdout.contains("got:hello") && out.stdout.contains("more") && out.stdout.contains("stdin-closed"),
        "kubectl attach -i: stdout {:?}, stderr {:?}",
        out.stdout,
        out.stderr
    );
    ensure!(!out.stderr.contains("does not accept input"), "stdin: true must be connected: {:?}", out.stderr);
    wait_until("the reader to finish", EXPECT, Duration::from_millis(200), || async {
        let phase = skiff.kubectl(&["get", "pod", "reader", "-o", "jsonpath={.status.phase}"]).await?.stdout;
        Ok((phase == "Succeeded").then_some(()))
    })
    .await?;
    skiff.kubectl(&["delete", "pod", "reader", "--timeout=60s"]).await?.ok()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_it_and_attach_on_containers() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-tty-e2e-").tempdir()?;
    let options = oci_start_options(&netns, scripts.path())?;
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());
    let image = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;

    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&sleeper_pod("shell", &image))).await?.ok()?;
    ready_pod(&skiff, "shell").await?;
    exec_it(&skiff, "shell").await?;
    attach_streams(&skiff, &image).await?;
    attach_stdin(&skiff, &image).await?;

    skiff.kubectl(&["delete", "pod", "shell", "--timeout=60s"]).await?.ok()?;
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
