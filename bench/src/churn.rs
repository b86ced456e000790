//! The `churn` benchmark (issue 6): how long many Services and their endpoints take to reach
//! the node's service proxy and cluster DNS, created and then deleted.
//!
//! `skiff up --pod-network bridge` runs inside a network namespace this bench creates (cluster
//! IPs and `10.96.0.10:53` are only served there). One hello-http pod is the backend of every
//! Service: each Service is selector-less with a manual Endpoints naming the pod (the agent's
//! proxy reads EndpointSlices, so this also times the mirroring controller), created from
//! `--clients` concurrent API clients.
//!
//! While the objects are written, a checker inside the namespace sweeps every Service not yet
//! seen: a DNS A query for `<svc>.<ns>.svc.cluster.local` over one UDP socket (answered with
//! the Service's cluster IP = seen by DNS) and whether a TCP socket listens on `clusterIP:80`
//! in the namespace (`/proc/thread-self/net/tcp` read from inside it: the proxy listens for a
//! Service port exactly while it serves it). Connecting instead, as an earlier version did,
//! loaded the node with thousands of relayed connections per sweep while the Services were
//! still there, and the API writes being timed slowed down under that load, not under the
//! churn. A Service counts once both say so; the figure is
//! the time from the first create until the last Service counts, beside the time the API took
//! to acknowledge every write. Deletion is timed the same way (NXDOMAIN, refused). A sample of
//! Services is finally asked for hello-http's body through its cluster IP.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt as _;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use skiff_tests::{Inside, NetNs};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::pods::{Cluster, release_warning};
use crate::report;

/// The namespace the Services live in.
const NAMESPACE: &str = "bench-churn";
/// The node's cluster DNS.
const CLUSTER_DNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53);
/// How long one phase may take before the bench fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a DNS sweep waits for a window's answers.
const DNS_WAIT: Duration = Duration::from_millis(300);
/// DNS queries in flight at once.
const DNS_WINDOW: usize = 128;
/// Tries per API request (transport errors only).
const ATTEMPTS: usize = 3;
/// Services asked for a full HTTP answer at the end.
const SAMPLE: usize = 20;

/// Settings of one `churn` run.
#[derive(Debug, Clone)]
pub struct ChurnBench {
    /// Services created (each with its Endpoints).
    pub services: usize,
    /// Concurrent API clients writing them.
    pub clients: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
    /// API requests sent again after a transport error.
    pub retried: Arc<AtomicUsize>,
}

/// One phase's figures.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// From the first write until the API acknowledged the last.
    api: Duration,
    /// From the first write until DNS agreed for every Service.
    dns: Duration,
    /// From the first write until the proxy agreed for every Service.
    proxy: Duration,
}

impl Phase {
    fn both(&self) -> Duration {
        self.dns.max(self.proxy)
    }
}

/// What the checker knows of one Service.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    ip: Ipv4Addr,
}

impl ChurnBench {
    /// Runs the create and delete phases and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        ensure!(self.services > 0 && self.clients > 0, "--services and --clients must be positive");
        let netns = NetNs::create()?;
        let cluster = Cluster::start_bridge(self.skiff_bin.as_ref(), &netns).await?;
        let result = self.measure(&cluster, &netns).await;
        cluster.with_log(result)
    }

    async fn measure(&self, cluster: &Cluster, netns: &NetNs) -> Result<String> {
        cluster.create_namespace(NAMESPACE).await?;
        let mut watch = cluster.watch_ready(NAMESPACE).await?;
        cluster.create_pod(NAMESPACE, "hello").await?;
        let pod_ip = watch.wait_for("hello").await?.pod_ip.context("Ready pod has no podIP")?;
        let inside = Inside::new(netns.name())?;
        let dns = Arc::new(inside_udp(&inside).await?);

        let names: Vec<String> = (0..self.services).map(|i| format!("churn-{i}")).collect();
        let (known, targets) = watch::channel(None);
        let started = Instant::now();
        // try_join: a failed write ends the phase at once instead of after the checker's timeout.
        let ((targets, api), (dns_at, proxy_at)) = tokio::try_join!(
            self.create_all(cluster, &names, &pod_ip, known),
            check_all(&inside, &dns, targets.clone(), true, started)
        )?;
        let create = Phase { api, dns: dns_at, proxy: proxy_at };
        eprintln!("create: {create:?}");

        let answered = sample_answers(netns, &targets).await?;

        let started = Instant::now();
        let (_, known) = watch::channel(Some(targets));
        let (api, (dns_at, proxy_at)) =
            tokio::try_join!(self.delete_all(cluster, &names), check_all(&inside, &dns, known, false, started))?;
        let delete = Phase { api, dns: dns_at, proxy: proxy_at };
        eprintln!("delete: {delete:?}");
        Ok(self.render(create, delete, answered))
    }

    /// Creates every Service and its Endpoints; the targets and when the last was acknowledged.
    async fn create_all(
        &self,
        cluster: &Cluster,
        names: &[String],
        pod_ip: &str,
        known: watch::Sender<Option<Vec<Target>>>,
    ) -> Result<(Vec<Target>, Duration)> {
        let started = Instant::now();
        let results: Vec<Result<Target>> = futures::stream::iter(names.iter().cloned())
            .map(|name| async move { create_one(cluster, &name, pod_ip, &self.retried).await })
            .buffer_unordered(self.clients)
            .collect()
            .await;
        let api = started.elapsed();
        let targets = results.into_iter().collect::<Result<Vec<_>>>()?;
        known.send_replace(Some(targets.clone()));
        Ok((targets, api))
    }

    /// Deletes every Service and its Endpoints; when the last delete was acknowledged.
    async fn delete_all(&self, cluster: &Cluster, names: &[String]) -> Result<Duration> {
        let started = Instant::now();
        let results: Vec<Result<()>> = futures::stream::iter(names.iter().cloned())
            .map(|name| async move {
                for kind in ["services", "endpoints"] {
                    let url = format!("{}/api/v1/namespaces/{NAMESPACE}/{kind}/{name}", cluster.skiff.url);
                    let (response, _) = send(&self.retried, || cluster.http.delete(&url)).await?;
                    if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_FOUND {
                        bail!("deleting {kind} {name}: {} {}", response.status(), response.text().await?);
                    }
                }
                Ok(())
            })
            .buffer_unordered(self.clients)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(started.elapsed())
    }

    fn render(&self, create: Phase, delete: Phase, answered: usize) -> String {
        let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
        let rate = |d: Duration| format!("{:.0}", self.services as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE));
        let mut out = format!(
            "## Service churn: Services reaching the proxy and DNS\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce (root: it creates a network namespace): `bash scripts/build-guests.sh && \
             cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench churn --services {} \
             --clients {}`\n\n\
             One `skiff up --pod-network bridge` node in a fresh network namespace. {} selector-less ClusterIP \
             Services, each with a manual Endpoints naming one hello-http pod, written by {} concurrent API \
             clients (Service, then its Endpoints), then deleted the same way. A checker in the namespace \
             sweeps the Services not yet seen: DNS A query to 10.96.0.10 (the Service's cluster IP, then \
             NXDOMAIN) and whether a socket listens on clusterIP:80 there (the proxy listens exactly while \
             it serves the Service; read from /proc, so the check adds no load). Times are from the first \
             write; the lag is after the API acknowledged the last write. {answered} of {SAMPLE} sampled \
             Services answered hello-http's body through their cluster IP. API requests retried after a \
             transport error: {}. One node: every node's agent runs the same watches.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.services,
            self.clients,
            self.services,
            self.clients,
            self.retried.load(Ordering::Relaxed),
        );
        let row = |phase: &str, p: &Phase| {
            vec![
                phase.to_string(),
                self.services.to_string(),
                s(p.api),
                rate(p.api),
                s(p.dns),
                s(p.proxy),
                s(p.both()),
                s(p.both().saturating_sub(p.api)),
            ]
        };
        out += &report::table(
            &["phase", "Services", "API s", "Services/s (API)", "DNS s", "proxy s", "both s", "lag after API s"],
            &[row("create", &create), row("delete", &delete)],
        );
        out
    }
}

/// Creates one Service (cluster IP allocated) and its Endpoints.
async fn create_one(cluster: &Cluster, name: &str, pod_ip: &str, retried: &AtomicUsize) -> Result<Target> {
    let base = format!("{}/api/v1/namespaces/{NAMESPACE}", cluster.skiff.url);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    let url = format!("{base}/services");
    let (mut response, again) = send(retried, || cluster.http.post(&url).json(&service)).await?;
    if response.status() == reqwest::StatusCode::CONFLICT && again {
        // A retried create whose first attempt was written: read what it made.
        response = send(retried, || cluster.http.get(format!("{url}/{name}"))).await?.0;
    }
    if !response.status().is_success() {
        bail!("creating Service {name}: {} {}", response.status(), response.text().await?);
    }
    let created: serde_json::Value = response.json().await?;
    let ip = created["spec"]["clusterIP"].as_str().context("no clusterIP")?.parse().context("clusterIP")?;
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{"addresses": [{"ip": pod_ip}], "ports": [{"name": "http", "port": 8080}]}]});
    let url = format!("{base}/endpoints");
    let (response, again) = send(retried, || cluster.http.post(&url).json(&endpoints)).await?;
    let retried_write = response.status() == reqwest::StatusCode::CONFLICT && again;
    if !response.status().is_success() && !retried_write {
        bail!("creating Endpoints {name}: {} {}", response.status(), response.text().await?);
    }
    Ok(Target { name: name.to_string(), ip })
}

/// Sends a request, again (up to [`ATTEMPTS`] in all) when it fails without an HTTP answer — a
/// transport error on the shared HTTP/2 connection — counting the retries in `retried`
/// (reported with the figures); the response, and whether this request was sent again.
async fn send(
    retried: &AtomicUsize,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(reqwest::Response, bool)> {
    let mut attempt = 1;
    loop {
        match request().send().await {
            Ok(response) => return Ok((response, attempt > 1)),
            Err(error) if attempt < ATTEMPTS => {
                eprintln!("API request failed ({:#}); retrying", anyhow::Error::from(error));
                retried.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// A UDP socket made inside the namespace (usable from any thread).
async fn inside_udp(inside: &Inside) -> Result<UdpSocket> {
    let socket = inside.call(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).await?.context("UDP bind")?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket)?)
}

/// Sweeps until DNS and the proxy agree with `present` for every target; when each did,
/// measured from `started`. The targets (with their cluster IPs) are known once every create
/// was acknowledged (`known`), so nothing is counted before then: a phase cannot end before
/// its writes.
async fn check_all(
    inside: &Inside,
    dns: &UdpSocket,
    mut known: watch::Receiver<Option<Vec<Target>>>,
    present: bool,
    started: Instant,
) -> Result<(Duration, Duration)> {
    let targets = known.wait_for(Option::is_some).await.context("the writer ended")?.clone().unwrap_or_default();
    let what = if present { "served" } else { "gone" };
    // Two independent checkers: a slow side must not delay the other's sweeps.
    let dns_side = async {
        let mut pending = targets.clone();
        while !pending.is_empty() {
            ensure!(started.elapsed() < PHASE_TIMEOUT, "DNS: Services not all {what} after {PHASE_TIMEOUT:?}");
            let agreed = dns_sweep(dns, &pending, present).await?;
            pending.retain(|t| !agreed.contains(&t.name));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    };
    let proxy_side = async {
        let mut pending = targets.clone();
        while !pending.is_empty() {
            ensure!(started.elapsed() < PHASE_TIMEOUT, "proxy: Services not all {what} after {PHASE_TIMEOUT:?}");
            let sweep = std::mem::take(&mut pending);
            pending = inside
                .call(move || {
                    let listening = listening_tcp()?;
                    Ok::<_, anyhow::Error>(
                        sweep.into_iter().filter(|t| listening.contains(&(t.ip, 80)) != present).collect::<Vec<_>>(),
                    )
                })
                .await??;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    };
    tokio::try_join!(dns_side, proxy_side)
}

/// The IPv4 addresses and ports with a listening TCP socket in the calling thread's network
/// namespace (`/proc/thread-self/net/tcp`, state `0A`).
fn listening_tcp() -> Result<HashSet<(Ipv4Addr, u16)>> {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").context("reading /proc/thread-self/net/tcp")?;
    let mut listening = HashSet::new();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) = (fields.nth(1), fields.next(), fields.next()) else { continue };
        if state != "0A" {
            continue;
        }
        let Some((ip, port)) = local.split_once(':') else { continue };
        let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16)) else { continue };
        // The address is in network order read as a host-order (little-endian) word.
        listening.insert((Ipv4Addr::from(ip.swap_bytes()), port));
    }
    Ok(listening)
}

/// Asks DNS about every pending target, [`DNS_WINDOW`] queries in flight at a time (so the
/// socket's receive buffer never overflows); the names whose answer agrees with `present`
/// (A = the cluster IP; or NXDOMAIN). An unanswered query is asked again next sweep.
async fn dns_sweep(socket: &UdpSocket, pending: &[Target], present: bool) -> Result<HashSet<String>> {
    let mut agreed = HashSet::new();
    let mut buffer = vec![0u8; 4096];
    for (window, chunk) in pending.chunks(DNS_WINDOW).enumerate() {
        // Ids unique across the sweep: a late answer of an earlier window still counts.
        let first = window * DNS_WINDOW;
        for (i, target) in chunk.iter().enumerate() {
            let name = Name::from_str(&format!("{}.{NAMESPACE}.svc.cluster.local.", target.name))?;
            let mut query = Message::query();
            query.metadata.id = u16::try_from(first + i).unwrap_or(u16::MAX);
            query.add_query(Query::query(name, RecordType::A));
            socket.send_to(&query.to_vec()?, CLUSTER_DNS).await?;
        }
        let deadline = tokio::time::Instant::now() + DNS_WAIT;
        let mut answers = 0;
        while answers < chunk.len() {
            let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await else { break };
            let (len, _) = received?;
            let Ok(answer) = Message::from_vec(&buffer[..len]) else { continue };
            let Some(target) = pending.get(usize::from(answer.metadata.id)) else { continue };
            answers += usize::from(usize::from(answer.metadata.id) >= first);
            let says = if present {
                answer.answers.iter().any(|r| matches!(&r.data, RData::A(a) if a.0 == target.ip))
            } else {
                answer.metadata.response_code == ResponseCode::NXDomain
            };
            if says {
                agreed.insert(target.name.clone());
            }
        }
    }
    Ok(agreed)
}

/// How many of a sample of Services answer hello-http's body through their cluster IP.
async fn sample_answers(netns: &NetNs, targets: &[Target]) -> Result<usize> {
    let step = (targets.len() / SAMPLE).max(1);
    let mut answered = 0;
    for target in targets.iter().step_by(step).take(SAMPLE) {
        let url = format!("http://{}/", target.ip);
        let out = netns.command("curl").args(["-sS", "--fail", "-m", "5", &url]).output().await?;
        if out.status.success() && !out.stdout.is_empty() {
            answered += 1;
        } else {
            eprintln!("{} ({url}): {}", target.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(answered)
}
