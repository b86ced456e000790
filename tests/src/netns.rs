//! A network namespace owned by one test, for running Skiff with real pod networking.
//!
//! Project rule: a test that lets Skiff touch real interfaces (bridge mode) runs it inside a
//! namespace the test creates and removes, holding only `lo` and whatever Skiff creates — no
//! uplink, no default route — so a routing bug can never reach the machine's network.
//!
//! What it owns: creating the namespace ([`NetNs::create`], `ip netns add` + `lo` up), running
//! commands inside it ([`NetNs::command`], [`NetNs::run`], [`NetNs::ip`]), removing it on drop
//! (after killing anything still running in it), making sockets inside it from the test
//! process ([`Inside`]: a thread that joined the namespace), and [`Forward`]: a TCP forward from a port on
//! the host's `127.0.0.1` to the same port on the namespace's `127.0.0.1`, so kubectl, kube-rs
//! and `skiff push` reach an API server inside the namespace with the kubeconfig unchanged.
//! What it does not: start Skiff (`skiff.rs` does, given `StartOptions::netns`).
//!
//! Needs root (CI runs as root). Without it, creating a namespace is an error saying so —
//! never a skip: a suite that skipped its networking tests would pass while testing nothing.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Deadline for one command run inside the namespace.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for one TCP connect made inside the namespace (all targets are local addresses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace `skiff-test-<pid>-<n>`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace with `lo` up and nothing else.
    ///
    /// Fails (with a message saying why) when not running as root.
    pub fn create() -> Result<NetNs> {
        let euid = rustix::process::geteuid();
        if !euid.is_root() {
            bail!(
                "network namespace tests need root (running as uid {}); CI runs them as root — \
                 run with sudo, they are never skipped",
                euid.as_raw()
            );
        }
        let name = format!("skiff-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        // From here on, drop removes the namespace even if the rest fails.
        let netns = NetNs { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (for `ip netns exec NAME`, `ip -n NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`: its stdout, or an error with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.name, program]).kill_on_drop(true);
        command
    }

    /// Runs `program ARGS` inside the namespace with a deadline; its stdout, or an error with
    /// its stderr.
    pub async fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let what = format!("{program} {} (in netns {})", args.join(" "), self.name);
        let output = tokio::time::timeout(RUN_TIMEOUT, self.command(program).args(args).output())
            .await
            .with_context(|| format!("{what} timed out"))?
            .with_context(|| format!("starting {what}"))?;
        if !output.status.success() {
            bail!("{what} failed with {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The IPv4 addresses (with prefix length) on interface `dev`, e.g. `10.244.0.1/24`.
    pub fn ipv4_addrs(&self, dev: &str) -> Result<Vec<String>> {
        Ok(inet_addrs(&self.ip(&["-4", "-o", "addr", "show", "dev", dev])?))
    }

    /// Process ids running inside the namespace.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = ip(&["netns", "pids", &self.name])?;
        Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Anything left inside (a skiff the test did not stop) would outlive the namespace's
        // name; kill it first. Best effort throughout: drop cannot fail.
        for pid in self.pids().unwrap_or_default() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        if let Err(error) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: removing network namespace {}: {error:#}", self.name);
        }
    }
}

/// `ip ARGS` in the host namespace: stdout, or an error with stderr.
fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip").args(args).output().context("running ip (is iproute2 installed?)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The `inet ADDR/LEN` entries of `ip -o addr show` output.
fn inet_addrs(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_string)
        })
        .collect()
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs socket calls inside a namespace: a dedicated thread joins the namespace once (`setns`
/// changes only the calling thread) and runs the closures it is sent. A socket belongs to the
/// namespace it was created in, so sockets made there (connections, listeners) are usable from
/// any thread afterwards. The thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Inside {
    jobs: mpsc::Sender<Job>,
}

impl Inside {
    /// Starts the thread inside the namespace called `netns`.
    pub fn new(netns: &str) -> Result<Inside> {
        let path = PathBuf::from("/run/netns").join(netns);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (joined_tx, joined_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("in-{netns}"))
            .spawn(move || {
                use std::os::fd::AsFd;
                let joined = rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                );
                drop(file);
                let ok = joined.is_ok();
                let _ = joined_tx.send(joined);
                if ok {
                    for job in incoming {
                        job();
                    }
                }
            })
            .context("spawning the netns thread")?;
        joined_rx
            .recv()
            .context("the netns thread died")?
            .with_context(|| format!("joining network namespace {netns}"))?;
        Ok(Inside { jobs })
    }

    /// Runs `f` on the thread inside the namespace and returns its result.
    pub async fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        if self.jobs.send(job).is_err() {
            bail!("the netns thread is gone");
        }
        answer.await.context("the netns thread dropped the call")
    }

    /// Connects to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
        let stream = self
            .call(move || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .await?
            .with_context(|| format!("connecting to {addr} inside the namespace"))?;
        stream.set_nonblocking(true).context("making the stream non-blocking")?;
        tokio::net::TcpStream::from_std(stream).context("registering the stream with tokio")
    }

    /// Binds a TCP listener on `addr` inside the namespace.
    pub async fn listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        let listener = self
            .call(move || std::net::TcpListener::bind(addr))
            .await?
            .with_context(|| format!("binding {addr} inside the namespace"))?;
        listener.set_nonblocking(true).context("making the listener non-blocking")?;
        TcpListener::from_std(listener).context("registering the listener with tokio")
    }
}

/// Forwards `127.0.0.1:PORT` in the host namespace to `127.0.0.1:PORT` inside a namespace.
/// Stops (closing every forwarded connection) on drop.
#[derive(Debug)]
pub struct Forward {
    port: u16,
    cancel: CancellationToken,
}

impl Forward {
    /// Binds `127.0.0.1:port` here and starts forwarding; needs a tokio runtime.
    ///
    /// A connection whose inner connect fails (nothing listens yet) is closed at once, which a
    /// client sees as a refused or reset connection — readiness polling simply retries.
    pub async fn start(netns: &str, port: u16) -> Result<Forward> {
        let inside = Inside::new(netns)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port} for the netns forward"))?;
        let cancel = CancellationToken::new();
        tokio::spawn(forward_loop(listener, inside, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), cancel.clone()));
        Ok(Forward { port, cancel })
    }

    /// The forwarded port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Accepts until `cancel` fires; the connection tasks are owned here and aborted with it.
async fn forward_loop(listener: TcpListener, inside: Inside, target: SocketAddr, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => {
                let Ok((mut outside, _)) = accepted else { continue };
                let inside = inside.clone();
                connections.spawn(async move {
                    if let Ok(mut stream) = inside.connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut outside, &mut stream).await;
                    }
                });
            }
        }
    }
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inet_addresses() {
        let out = "5: skiff0    inet 10.244.0.1/24 scope global skiff0\\       valid_lft forever\n\
                   5: skiff0    inet 10.244.0.2/32 scope global skiff0\\       valid_lft forever\n";
        assert_eq!(inet_addrs(out), vec!["10.244.0.1/24", "10.244.0.2/32"]);
        assert!(inet_addrs("").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespace_is_isolated_forwarded_and_removed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let netns = NetNs::create().expect("creating a netns (needs root)");
        let name = netns.name().to_string();
        assert!(ip(&["netns", "list"]).expect("ip netns list").contains(&name));
        assert_eq!(netns.ipv4_addrs("lo").expect("lo addresses"), vec!["127.0.0.1/8"]);
        let routes = netns.ip(&["route", "show", "table", "all"]).expect("routes");
        assert!(!routes.contains("default"), "a fresh namespace must have no default route: {routes}");
        let links = netns.ip(&["-o", "link"]).expect("links");
        assert_eq!(links.lines().count(), 1, "only lo expected: {links}");

        // A host listener is not reachable from inside: the loopbacks are separate.
        let host = TcpListener::bind(("127.0.0.1", 0)).await.expect("host bind");
        let host_addr = host.local_addr().expect("addr");
        let inside = Inside::new(&name).expect("joining the netns");
        assert!(inside.connect(host_addr).await.is_err(), "reached the host's {host_addr} from inside");

        // A server inside on the same port number is reached through the forward.
        let server = inside.listen(host_addr).await.expect("binding the same port inside");
        drop(host);
        let forward = Forward::start(&name, host_addr.port()).await.expect("forward");
        let serve = tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.expect("accept inside");
            stream.write_all(b"hello from inside").await.expect("write");
        });
        let mut client = tokio::net::TcpStream::connect(host_addr).await.expect("connect to the forward");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got))
            .await
            .expect("read in time")
            .expect("read");
        assert_eq!(got, b"hello from inside");
        serve.await.expect("server task");

        drop(forward);
        drop(inside);
        drop(netns);
        assert!(!ip(&["netns", "list"]).expect("ip netns list").contains(&name), "{name} left behind");
    }
}
