//! `kubectl logs` end to end without a full agent: the test runs a node API in-process (with
//! a log store it writes lines into and a serving certificate from the server's cluster PKI),
//! registers a Node whose status points at it, creates a pod bound to that node, and drives
//! real `kubectl logs` — plain, `--tail`, `--since`, `--since-time`, `--timestamps`,
//! `--previous`, `-f` — through the API server's `pods/log` subresource.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_control_plane::pki::ClusterPki;
use skiff_node::logs::{FileSink, LogStore};
use skiff_node::nodeapi::{self, NodeApiTls};
use skiff_node::runtime::{LogSink, LogStream, PodRef};
use skiff_tests::{Skiff, StartOptions, StoreKind, both_stores};
use tokio_util::sync::CancellationToken;

const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A node API served by the test, stopped on drop.
struct TestNode {
    logs: LogStore,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

/// Starts a node API with a certificate from the server's PKI and registers Node `name`.
async fn start_node(skiff: &Skiff, name: &str) -> Result<TestNode> {
    let pki = ClusterPki::load_existing(&skiff.data_dir().join("pki")).context("loading the cluster PKI")?;
    let (cert_pem, key_pem) = pki.issue_server_cert(name, &["127.0.0.1".to_string()])?;
    let tls = NodeApiTls { cert_pem, key_pem, ca_pem: pki.ca_pem().to_string() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let logs = LogStore::new(dir.path().join("pods"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (logs, shutdown) = (logs.clone(), shutdown.clone());
        async move {
            if let Err(e) = nodeapi::serve(listener, tls, logs, shutdown).await {
                eprintln!("node API failed: {e}");
            }
        }
    });

    let nodes: Api<Node> = Api::all(skiff.kube_client().await?);
    let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))?;
    nodes.create(&PostParams::default(), &node).await.context("creating the Node")?;
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.context("patching Node status")?;
    Ok(TestNode { logs, shutdown, task, _dir: dir })
}

/// Creates pod `name` with one container `app`, bound to `node` (or unscheduled).
async fn create_pod(skiff: &Skiff, name: &str, node: Option<&str>) -> Result<PodRef> {
    let pods: Api<Pod> = Api::namespaced(skiff.kube_client().await?, "default");
    let mut spec = json!({"containers": [{"name": "app", "image": "example/app:1"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    let pod: Pod =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))?;
    let created = pods.create(&PostParams::default(), &pod).await.context("creating the pod")?;
    Ok(PodRef { namespace: "default".into(), name: name.into(), uid: created.metadata.uid.context("pod uid")? })
}

async fn logs_ok(skiff: &Skiff, args: &[&str]) -> Result<String> {
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    skiff.kubectl(&full).await?.ok()
}

async fn kubectl_logs(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start_with(StartOptions::control_plane_only(store)).await?;
    let node = start_node(&skiff, "logs-node").await?;
    let pod = create_pod(&skiff, "web", Some("logs-node")).await?;

    // Not started yet: the node says so, the API server relays it as a BadRequest.
    let err = skiff.kubectl(&["logs", "web"]).await?.err()?;
    ensure!(err.contains("is waiting to start: ContainerCreating"), "unexpected error: {err}");

    let run0: Arc<FileSink> = Arc::new(node.logs.open(&pod, "app", 0)?);
    run0.write(LogStream::Stdout, b"first line\nsecond line\n");
    run0.write(LogStream::Stderr, b"an error line\n");
    ensure!(logs_ok(&skiff, &["web"]).await? == "first line\nsecond line\nan error line\n");
    ensure!(logs_ok(&skiff, &["web", "-c", "app", "--tail=1"]).await? == "an error line\n");
    ensure!(logs_ok(&skiff, &["web", "--since=1h"]).await?.lines().count() == 3);
    // `sinceTime` travels with second precision (metav1.Time): cut at the next whole second,
    // at least a second after the earlier lines, and write the new line after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 1)?;
    while jiff::Timestamp::now() <= cut {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run0.write(LogStream::Stdout, b"after the cut\n");
    let since = logs_ok(&skiff, &["web", &format!("--since-time={cut}")]).await?;
    ensure!(since == "after the cut\n", "--since-time: {since:?}");
    let stamped = logs_ok(&skiff, &["web", "--timestamps", "--tail=1"]).await?;
    let (time, text) = stamped.split_once(' ').context("timestamp prefix")?;
    ensure!(time.parse::<jiff::Timestamp>().is_ok() && text == "after the cut\n", "--timestamps: {stamped:?}");
    let limited = logs_ok(&skiff, &["web", "--limit-bytes=5"]).await?;
    ensure!(limited == "first", "--limit-bytes: {limited:?}");

    // Errors the API server decides itself.
    let err = skiff.kubectl(&["logs", "web", "-c", "nope"]).await?.err()?;
    ensure!(err.contains("container nope is not valid for pod web"), "unexpected error: {err}");
    let err = skiff.kubectl(&["logs", "web", "--previous"]).await?.err()?;
    ensure!(err.contains("previous terminated container \"app\" in pod \"web\" not found"), "unexpected error: {err}");
    create_pod(&skiff, "pending", None).await?;
    let err = skiff.kubectl(&["logs", "pending"]).await?.err()?;
    ensure!(err.contains("does not have a host assigned"), "unexpected error: {err}");

    // Follow: sees a line written after it started, and ends when the container restarts.
    let mut follow = skiff.kubectl_spawn(&["logs", "-f", "web"])?;
    follow.wait_for_line(LINE_TIMEOUT, |l| l == "after the cut").await?;
    run0.write(LogStream::Stdout, b"written while following\n");
    follow.wait_for_line(LINE_TIMEOUT, |l| l == "written while following").await?;
    drop(run0);
    let run1 = node.logs.open(&pod, "app", 1)?;
    run1.write(LogStream::Stdout, b"second run\n");
    let end = follow.wait_for_line(LINE_TIMEOUT, |_| false).await.expect_err("follow ends");
    ensure!(end.to_string().contains("output ended"), "follow did not end: {end:#}");

    // Now there is a previous run.
    ensure!(logs_ok(&skiff, &["web"]).await? == "second run\n");
    let previous = logs_ok(&skiff, &["web", "-p"]).await?;
    ensure!(
        previous.starts_with("first line\n") && previous.ends_with("written while following\n"),
        "--previous: {previous:?}"
    );
    Ok(())
}

both_stores!(kubectl_logs);

/// Only the API server (group system:masters) may read logs; other CA-issued certificates
/// are refused, and a certificate from elsewhere never gets through the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_api_requires_the_kubelet_client_cert() -> Result<()> {
    let skiff = Skiff::start_with(StartOptions::control_plane_only(StoreKind::Embedded)).await?;
    let node = start_node(&skiff, "authz-node").await?;
    let pki = ClusterPki::load_existing(&skiff.data_dir().join("pki"))?;
    let nodes: Api<Node> = Api::all(skiff.kube_client().await?);
    let port =
        nodes.get("authz-node").await?.status.and_then(|s| s.daemon_endpoints?.kubelet_endpoint).context("port")?.port;
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/x/app");
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes())?;
    let client_with = |cn: &str, groups: &[&str]| -> Result<reqwest::Client> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let (cert, key) = pki.issue_client_cert(cn, &groups)?;
        let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes())?;
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca.clone())
            .identity(identity)
            .timeout(Duration::from_secs(10))
            .build()?)
    };
    let node_user = client_with("system:node:other", &["system:nodes"])?;
    ensure!(node_user.get(&url).send().await?.status() == reqwest::StatusCode::FORBIDDEN);
    let admin = client_with("skiff-apiserver-kubelet-client", &["system:masters"])?;
    ensure!(
        admin.get(&url).send().await?.status() == reqwest::StatusCode::BAD_REQUEST,
        "pod x has no logs on this node yet"
    );
    let anonymous = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()?;
    ensure!(anonymous.get(&url).send().await.is_err(), "no client certificate: handshake refused");
    drop(node);
    Ok(())
}
